#!/bin/bash
# The cheapest bash hook imaginable: exit unless the domain has a profile file. What every
# domain would pay for a hook written in bash, before any real work.
[ -f "$PASSTHROUGH_HOOK_CONFIG_DIR/$1.yaml" ] || exit 0
exit 1  # the benchmark only calls it for domains without a profile
