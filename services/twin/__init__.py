"""The simulated traffic twin: the city, its models, the demos and the harnesses that drive the product.

Nothing in the product (crypto, mpc, the aggregator, the edge agent) imports this
package; it uses them the way a deployment would, over their public APIs.
"""
