"""The networks of the paper, the model registry, safe weights files, FFT convolution."""
