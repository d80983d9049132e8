"""The runtime: interpreter, gate, runs in flight, Engine, Worker."""
