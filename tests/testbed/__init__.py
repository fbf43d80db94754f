"""The project's test bed: real containerd, etcd, kube-apiserver and kubelet started from cached binaries.

Each component module starts and stops one piece for real and tears down everything it created; the
`prereq` module decides whether a missing piece is a skip (developer machine) or a failure (CI).
"""
