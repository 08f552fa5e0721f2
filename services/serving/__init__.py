"""The Ray Serve application: model deployments (vLLM on GPUs, the local model on CPUs) and
the thinktank API as an ingress. See :mod:`services.serving.app`."""
