"""PCM (preference control model): token-level merging of frozen preference experts with learned weights.

Built so far: the controller with its n-way head and the REBEL objective on cached expert log-probs
(`controller.py`); decoding from the mixture lives in `steerable.generation.mixture`. Not yet a `method=pcm`."""
