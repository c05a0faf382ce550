"""The Vast stack: provisioning, the Caddy edge, the SGLang launcher and GPU discovery."""
