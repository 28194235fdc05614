"""The local sketch daemon: HTTP routes, job queue and job store on top of the engine."""
