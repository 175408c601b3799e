"""kubectl kvbackup: back up and restore KubeVirt VMs safely."""

__version__ = "0.1.0"
