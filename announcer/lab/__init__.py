"""The spine-leaf lab: a containerlab topology file brought up in network namespaces (or by
containerlab), traffic through the fabric, failures, and a report (docs/lab.md)."""
