"""The kubectl-driven platform that kind and an existing cluster share: commands, pinned tools, the
platform's probes, evidence and faults. kind (cluster/kind) adds its bring-up; the existing-cluster
platform (cluster/kubeconfig) adds other credentials. Neither imports the other."""
