"""weightlift.verify: safetensors validation, checkpoint checks and the parameter-count gate."""
