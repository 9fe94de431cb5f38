"""Filters that turn the hosts' preflight results into one fleet report."""

from __future__ import annotations

REPORT_FORMAT = 1


def _host_entry(result):
    if not isinstance(result, dict) or "status" not in result:
        message = (result or {}).get("msg") if isinstance(result, dict) else None
        return {
            "reported": False,
            "error": message or "no preflight result (the host failed or was unreachable earlier)",
        }
    held, stuck = [], []
    for domain in result["status"].get("domains", []):
        for device in domain.get("devices", []):
            held.append(
                {
                    "domain": domain.get("domain"),
                    "name": device.get("name"),
                    "address": device.get("address"),
                    "driver": device.get("now"),
                    "was": device.get("was"),
                    "since": domain.get("since"),
                }
            )
        for problem in domain.get("problems", []):
            stuck.append(
                {
                    "domain": domain.get("domain"),
                    "kind": problem.get("kind"),
                    "message": problem.get("message"),
                    "fix": problem.get("fix"),
                }
            )
    checks = {}
    for domain, check in sorted((result.get("checks") or {}).items()):
        if "error" in check:
            checks[domain] = {"ok": False, "errors": [check["error"]], "warnings": []}
            continue
        findings = check.get("findings", [])
        checks[domain] = {
            "ok": domain not in result.get("failed_checks", []),
            "errors": [f["message"] for f in findings if f.get("severity") == "error"],
            "warnings": [f["message"] for f in findings if f.get("severity") == "warning"],
        }
    return {
        "reported": True,
        "holds": held,
        "stuck": stuck,
        "vfio_without_journal": result["status"].get("vfio_without_journal", []),
        "checks": checks,
    }


def fleet_report(hostvars, hosts, var="__passthrough_hook_preflight"):
    """{format, hosts: {host: entry}, devices, stuck, failed_checks} for the given hosts."""
    report = {"format": REPORT_FORMAT, "hosts": {}, "devices": [], "stuck": [], "failed_checks": []}
    for host in sorted(hosts):
        entry = _host_entry((hostvars.get(host) or {}).get(var))
        report["hosts"][host] = entry
        for device in entry.get("holds", []):
            report["devices"].append({"host": host, **device})
        for problem in entry.get("stuck", []):
            report["stuck"].append({"host": host, **problem})
        for domain, check in entry.get("checks", {}).items():
            if not check["ok"]:
                report["failed_checks"].append(
                    {"host": host, "domain": domain, "errors": check["errors"]}
                )
        if not entry["reported"]:
            report["failed_checks"].append(
                {"host": host, "domain": None, "errors": [entry["error"]]}
            )
    return report


def _check_cell(check):
    if check["ok"]:
        warnings = len(check["warnings"])
        return "ok" + (f" ({warnings} warning{'s' if warnings != 1 else ''})" if warnings else "")
    errors = len(check["errors"])
    return f"FAILED ({errors} error{'s' if errors != 1 else ''})"


def fleet_table(report):
    """The report as lines of a short table, then what is stuck and why checks fail."""
    rows = [("HOST", "DOMAIN", "HOLDS", "CHECK")]
    for host, entry in report["hosts"].items():
        if not entry["reported"]:
            rows.append((host, "-", "-", "NO REPORT"))
            continue
        domains = sorted(set(entry["checks"]) | {d["domain"] for d in entry["holds"]}) or ["-"]
        for domain in domains:
            held = [d for d in entry["holds"] if d["domain"] == domain]
            holds = ", ".join(f"{d['name'] or '?'} {d['address']}" for d in held) or "-"
            check = entry["checks"].get(domain)
            rows.append((host, domain, holds, _check_cell(check) if check else "not checked"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3]
        for row in rows
    ]
    for problem in report["stuck"]:
        lines.append(
            f"STUCK {problem['host']} {problem['domain']} ({problem['kind']}): {problem['message']}; fix: {problem['fix']}"
        )
    for failed in report["failed_checks"]:
        where = f"{failed['host']} {failed['domain']}" if failed["domain"] else failed["host"]
        for error in failed["errors"]:
            lines.append(f"FAILED {where}: {error}")
    return lines


class FilterModule:
    def filters(self):
        return {"fleet_report": fleet_report, "fleet_table": fleet_table}
