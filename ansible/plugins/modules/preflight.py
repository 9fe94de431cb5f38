#!/usr/bin/python
"""Ansible module: run passthrough-hook's status and check on a host, read-only."""

from __future__ import annotations

DOCUMENTATION = r"""
module: preflight
short_description: Run passthrough-hook status and check on a host
version_added: 0.1.0
description:
  - Runs C(passthrough-hook status --json) and C(passthrough-hook check DOMAIN --json) for
    each domain (by default every profile on the host) and returns what they found. Changes
    nothing on the host.
  - The module fails only when the program cannot be run or its output cannot be read; a
    check that finds errors is reported in RV(failed_checks) for the caller to act on.
options:
  domains:
    description: Domains to check; empty for every profile in O(config_dir).
    type: list
    elements: str
    default: []
  config_dir:
    description: Where the profiles are.
    type: path
    default: /etc/libvirt/hooks/passthrough
  executable:
    description: The passthrough-hook program (a name on PATH or a path).
    type: str
    default: passthrough-hook
author:
  - passthrough-hook contributors
"""

EXAMPLES = r"""
- name: Preflight every domain with a profile
  passthrough.passthrough_hook.preflight:
  register: preflight
"""

RETURN = r"""
status:
  description: The document of C(passthrough-hook status --json) (domains, the devices they hold, problems).
  returned: always
  type: dict
status_rc:
  description: Exit status of C(status); 1 when a journal needs recovery.
  returned: always
  type: int
checks:
  description: Per domain, the document of C(check DOMAIN --json), or C(error) with the message when the profile could not be read.
  returned: always
  type: dict
failed_checks:
  description: The domains whose check found errors or whose profile could not be read.
  returned: always
  type: list
  elements: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

# The --json documents this module reads; a newer program's are read the same way, with a warning.
KNOWN_FORMAT = 1


def _document(module, argv, allowed_rc):
    rc, out, err = module.run_command(argv)
    if rc not in allowed_rc:
        return rc, None, (err or out).strip() or f"exit status {rc}"
    try:
        data = json.loads(out)
    except ValueError:
        module.fail_json(
            msg=f"`{' '.join(argv)}` did not print JSON (exit status {rc}): {(err or out).strip()[:500]}"
        )
    if not isinstance(data, dict):
        module.fail_json(msg=f"`{' '.join(argv)}` printed JSON that is not an object")
    version = data.get("format", KNOWN_FORMAT)
    if isinstance(version, int) and version > KNOWN_FORMAT:
        module.warn(
            f"`{' '.join(argv[1:3])}` printed format {version}; this collection reads format "
            f"{KNOWN_FORMAT}: update the collection if the report misses fields"
        )
    return rc, data, None


def main():
    module = AnsibleModule(
        argument_spec={
            "domains": {"type": "list", "elements": "str", "default": []},
            "config_dir": {"type": "path", "default": "/etc/libvirt/hooks/passthrough"},
            "executable": {"type": "str", "default": "passthrough-hook"},
        },
        supports_check_mode=True,
    )
    params = module.params
    program = params["executable"]
    if "/" not in program:
        found = module.get_bin_path(program, opt_dirs=["/usr/local/bin", "/usr/bin"])
        if not found:
            module.fail_json(
                msg=f"{program} is not installed on this host (not on PATH, /usr/local/bin or /usr/bin)"
            )
        program = found
    elif not os.access(program, os.X_OK):
        module.fail_json(msg=f"{program} is not an executable")

    domains = params["domains"]
    if not domains:
        try:
            names = os.listdir(params["config_dir"])
        except FileNotFoundError:
            names = []
        domains = sorted(
            name.rsplit(".", 1)[0]
            for name in names
            if name.endswith((".yaml", ".yml")) and not name.startswith(".")
        )

    status_rc, status, problem = _document(module, [program, "status", "--json"], (0, 1))
    if status is None:
        module.fail_json(msg=f"passthrough-hook status failed: {problem}", status_rc=status_rc)

    checks, failed = {}, []
    env_dir = ["--config-dir", params["config_dir"]]
    for domain in domains:
        rc, data, problem = _document(
            module, [program, "check", *env_dir, "--json", domain], (0, 1)
        )
        if data is None:
            checks[domain] = {"rc": rc, "error": problem}
            failed.append(domain)
            continue
        data["rc"] = rc
        checks[domain] = data
        if rc != 0 or (data.get("counts") or {}).get("error"):
            failed.append(domain)

    module.exit_json(
        changed=False,
        status=status,
        status_rc=status_rc,
        checks=checks,
        failed_checks=failed,
    )


if __name__ == "__main__":
    main()
