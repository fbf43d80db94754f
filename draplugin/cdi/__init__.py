"""CDI specs for devices the container runtime moves itself (`netDevices`, CDI spec 1.1.0).

`spec` is pure (which devices qualify, their CDI names and spec documents); `specdir` owns the files in
the runtime's CDI spec directory. Prepare writes one spec per qualifying device and hands its CDI
device id to kubelet; Unprepare removes it; at start the directory is brought back in line with the
prepared plans, so specs survive a driver restart and never outlive their claim.
"""
