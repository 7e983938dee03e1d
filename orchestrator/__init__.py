"""resweep's orchestrator: sweep files, Ray Tune launch, the recorder, and the command line."""
