"""Device discovery: what this node could hand to pods, read from netlink and sysfs.

`netlink` and `sysfs` only read facts; `filters` decides what is publishable; `inventory` joins the
two into `model.PublishedDevice` records that the ResourceSlice publisher and the planner share.
"""
