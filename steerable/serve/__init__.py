"""`steerable-serve`: a local web page and JSON API to turn a trained run's dials (built on the policy layer)."""
