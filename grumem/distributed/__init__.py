"""Scale-out on Ray (pip install grumem[ray]): engine replicas as actors behind a router (ReplicaPool)."""
from grumem.distributed.pool import ReplicaPool

__all__ = ["ReplicaPool"]
