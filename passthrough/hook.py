"""libvirt's entry (hooks/qemu, after its fast path found a profile or a journal).

libvirt's arguments are always DOMAIN OPERATION SUB_OPERATION EXTRA with the domain XML on
stdin, never options: a domain named like a command (validate, status...) or an option is
a domain. Tolerant and silent: an event the profile has no steps for, or one a future
libvirt adds, does nothing and exits 0. It imports no more than the event needs: not the
command line's parser, not the tools.
"""

from __future__ import annotations

import sys

from .constants import PROG
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, PassthroughError, ProfileError

TYPE_CHECKING = False  # typing's constant, without importing typing (the hook's imports)
if TYPE_CHECKING:
    from typing import TextIO

    from .event import HostFactory, Paths


def read_domain_xml(stream: TextIO | None) -> str:
    """All of the stream (libvirt's stdin, or `--xml -`), so libvirt never writes into a
    pipe nobody reads; nothing from a terminal."""
    if stream is None or stream.isatty():
        return ""
    return stream.read()


def hook_main(
    argv: list[str],
    *,
    paths: Paths | None = None,
    host_factory: HostFactory | None = None,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """libvirt's call: `DOMAIN OPERATION SUB_OPERATION [EXTRA]`. The keywords are for tests
    (a fake kernel's tree and host); libvirt's call uses the host at / and the process's
    standard streams."""
    err = err or sys.stderr
    if len(argv) < 3:
        print(
            f"{PROG}: libvirt calls the hook with DOMAIN OPERATION SUB_OPERATION EXTRA; got "
            f"{len(argv)} argument(s) (`{PROG} help` lists the commands)",
            file=err,
        )
        return EXIT_USAGE
    try:
        from .event import NoWork, Paths, Request, resolve, run

        xml = read_domain_xml(stdin if stdin is not None else sys.stdin)
        request = Request(
            domain=argv[0],
            event=f"{argv[1]}/{argv[2]}",
            paths=paths or Paths.resolve(),
            person=False,
        )
        work = resolve(request)
        if isinstance(work, NoWork):
            return 0
        return run(work, host_factory, out or sys.stdout, err, xml)
    except ProfileError as exc:
        print(str(exc), file=err)
        return exc.exit_code
    except PassthroughError as exc:
        print(f"{PROG}: {exc}", file=err)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=err)
        return EXIT_INTERRUPTED
    except Exception:
        from .log import internal_error

        return internal_error(err)
