"""The object graph of KubeVirt workloads: pure edge functions (``edges``) and their closure (``walk``)."""
