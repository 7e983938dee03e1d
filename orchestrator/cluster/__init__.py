"""Running a sweep elsewhere: a Ray cluster's Jobs API, Slurm, KubeRay; what they share."""
