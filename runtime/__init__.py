"""nuviot-runtime: an open Python re-implementation of the NuvIoT Container Runtime."""

__version__ = "0.1.0"
