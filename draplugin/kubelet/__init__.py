"""The kubelet-facing gRPC side: plugin registration and the DRA node service (v1 and v1beta1).

grpcio's fork handlers crash pyroute2 when it forks into a netns (README, Hazards), and they are read when
grpc is first imported: importing this package before grpc switches them off unless the daemon
already chose otherwise.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
