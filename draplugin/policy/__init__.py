"""Device policy: the cluster's `DevicePolicy` objects (netclaim.dev/v1alpha1) decide, per node, which
devices are offered and under which `resourceName`.

`model` reads and checks one object, `match` decides per device (pure), `book` keeps the current
policies and the node's labels and reports what an operator must see (conflicts, invalid policies).
The Kubernetes side (list and watch, Events) is `draplugin.kube.policies`.
"""
