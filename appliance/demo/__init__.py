"""`appliance demo`: the whole appliance on one machine with simulated hardware."""
