"""Export formats, the runtimes that run a model (ONNX Runtime, Keras) and the export cache.

Above training and below everything that runs a model for a person (prediction,
evaluation): they ask this layer for the fastest runtime at hand.
"""
