"""The client side of corral: the `corral` CLI, input validation, routing, enqueue and reports."""
