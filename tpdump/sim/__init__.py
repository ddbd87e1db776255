"""The simulated Teleport cluster (`tpdump sim`): tctl stand-in, SSH proxy and nodes.

The core never imports this package; they meet through a state directory (docs/contracts.md).
Kept free of imports so that `tpdump.sim.tctl` stays fast to start.
"""
