"""nox sessions: `nox -s tests` runs the test suite in a fresh environment, `nox -s lint` runs ruff."""

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "piro_cli", "tests", "bench", "noxfile.py")
