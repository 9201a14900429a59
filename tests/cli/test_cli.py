#!/usr/bin/env python3
"""The command line's conventions, for every command (no broker needed):

- a wrong command line exits 2 in every command and subcommand: an unknown option, a missing
  required one, options that need each other, a malformed value;
- a mistyped subcommand is answered with the nearest subcommands;
- `--help` exits 0 everywhere;
- a config file (--config or $GPULEDGER_CONFIG, TOML) gives any command's options, the
  environment's GPULEDGER_* variables override it and the command line overrides both; a key no
  option has, or a file that is not there, is a wrong command line;
- the service units of ops/systemd/ pass `systemd-analyze verify` (with ExecStart pointing at
  the binary under test), and their example config file is read by every command without error;
- `publish` to an address where no broker answers fails (exit 1) within its connect timeout,
  saying so, and publishes nothing.
"""
import os
import re
import subprocess
import tempfile
import time
import unittest

BIN = os.environ["GPULEDGER_BIN"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args, timeout=60, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("GPULEDGER_")}
    e.update(env or {})
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout, env=e)


def subcommands(path):
    """The subcommands `gpuledger PATH --help` lists."""
    out = run(*path, "--help").stdout
    if "Subcommands:" not in out:
        return []
    names = []
    for line in out.split("Subcommands:", 1)[1].splitlines():
        m = re.match(r"^  ([a-z][a-z-]*)\s", line)
        if m:
            names.append(m.group(1))
    return names


def every_command(path=()):
    for name in subcommands(path):
        yield path + (name,)
        yield from every_command(path + (name,))


class CommandLineTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.commands = list(every_command())

    def test_the_command_tree_is_found(self):
        for c in [("serve",), ("settle",), ("settle", "close"), ("ledger", "show"),
                  ("report", "usage"), ("alerts", "run"), ("tokens", "add")]:
            self.assertIn(c, self.commands)

    def test_help_exits_0_everywhere(self):
        for c in self.commands:
            with self.subTest(command=c):
                self.assertEqual(run(*c, "--help").returncode, 0)

    def test_an_unknown_option_exits_2_everywhere(self):
        for c in self.commands:
            with self.subTest(command=c):
                p = run(*c, "--no-such-option")
                self.assertEqual(p.returncode, 2, p.stderr)

    def test_options_checked_by_the_command_itself_exit_2(self):
        cases = [
            ("serve", "--db", "x", "--tokens", "y", "--tls-cert", "c.pem"),
            ("settle", "--period", "2026-03"),
            ("settle", "--db", "x"),
            ("settle", "--db", "x", "--period", "March"),
            ("simulate", "--out", "d", "--brokers", "b"),
            ("simulate", "--out", "d", "--period", "2026-13"),
            ("ingest", "--brokers", "b", "--db", "d", "--topic-prefix", "bad prefix"),
            ("ingest", "--brokers", "b", "--db", "d"),  # neither --signing-key nor --unsigned
            ("publish", "--brokers", "b", "--topic-prefix", "no dot"),
            ("report", "usage", "--db", "x", "--from", "2026-03", "--to", "2026-02"),
            ("alerts", "list"),
            ("ledger", "verify"),
        ]
        for c in cases:
            with self.subTest(command=c):
                p = run(*c)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn("see --help", p.stderr)

    def test_a_mistyped_subcommand_gets_a_suggestion(self):
        for typed, want, where in [("setle", "settle", "gpuledger"),
                                   ("reprot", "report", "gpuledger"),
                                   ("veriffy", "verify", "gpuledger ledger")]:
            args = where.split()[1:] + [typed]
            with self.subTest(typed=typed):
                p = run("--log-level", "warn", *args)
                self.assertEqual(p.returncode, 2)
                self.assertIn(f"'{typed}' is not a command of `{where}`", p.stderr)
                self.assertIn(f"did you mean '{want}'", p.stderr)
        p = run("zzzzzz")
        self.assertEqual(p.returncode, 2)
        self.assertNotIn("did you mean", p.stderr)

    def test_config_file_then_environment_then_command_line(self):
        with tempfile.TemporaryDirectory() as d:
            config = os.path.join(d, "gpuledger.toml")
            with open(config, "w") as f:
                f.write('log-format = "text"\n[settle]\ndb = "/from-file"\nperiod = "2026-03"\n')
            # settle names the ledger it cannot open: which of the three gave --db.
            p = run("--config", config, "settle")
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("no ledger at /from-file", p.stderr)
            p = run("settle", env={"GPULEDGER_CONFIG": config})
            self.assertIn("no ledger at /from-file", p.stderr)
            p = run("--config", config, "settle", env={"GPULEDGER_DB": "/from-env"})
            self.assertIn("no ledger at /from-env", p.stderr)
            p = run("--config", config, "settle", "--db", "/from-flag",
                    env={"GPULEDGER_DB": "/from-env"})
            self.assertIn("no ledger at /from-flag", p.stderr)
            with open(config, "a") as f:
                f.write("dbb = \"/typo\"\n")
            p = run("--config", config, "settle")
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("dbb", p.stderr)
            p = run("settle", env={"GPULEDGER_CONFIG": os.path.join(d, "missing.toml")})
            self.assertEqual(p.returncode, 2, p.stderr)

    def test_service_units_verify_and_their_config_is_read(self):
        units = os.path.join(ROOT, "ops/systemd")
        with tempfile.TemporaryDirectory() as d:
            for name in ("gpuledger-ingest.service", "gpuledger-serve.service"):
                with open(os.path.join(units, name)) as f:
                    text = f.read()
                self.assertIn("ExecStart=/usr/local/bin/gpuledger ", text)
                path = os.path.join(d, name)
                with open(path, "w") as f:
                    f.write(text.replace("/usr/local/bin/gpuledger", os.path.abspath(BIN)))
                p = subprocess.run(["systemd-analyze", "verify", path], capture_output=True,
                                   text=True, timeout=60)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertNotIn(name, p.stderr)  # no warning about the unit itself
            # A unit systemd refuses makes verify fail (the check can fail).
            bad = os.path.join(d, "bad.service")
            with open(bad, "w") as f:
                f.write("[Service]\nExecStart=relative/gpuledger\n")
            self.assertNotEqual(subprocess.run(["systemd-analyze", "verify", bad],
                                               capture_output=True).returncode, 0)
        # Every key of the example config is an option: a command reads the whole file and gets
        # as far as opening the ledger it names.
        config = os.path.join(units, "gpuledger.toml")
        p = run("--config", config, "settle", "--period", "2026-03")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("no ledger at /var/lib/gpuledger/ledger", p.stderr)
        p = run("--config", config, "settle", "status")
        self.assertIn("no ledger at /var/lib/gpuledger/ledger", p.stderr)

    def test_publish_fails_fast_when_no_broker_answers(self):
        sample = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"cli-test-{os.getpid()}.jsonl")
        with open(sample, "w") as f:
            f.write('{"schemaVersion":1,"eventId":"e1","cspId":"csp-x","usage":{"allocationId":"a",'
                    '"gpuModel":"H200","gpuCount":1,"startMs":"2026-03-01T09:00:00+09:00",'
                    '"endMs":"2026-03-01T10:00:00+09:00","nodeId":"n"}}\n')
        try:
            start = time.monotonic()
            # Port 1 on loopback: refused at once, as an address where no broker runs.
            p = run("publish", "--brokers", "127.0.0.1:1", "--connect-timeout-ms", "3000", sample)
            took = time.monotonic() - start
        finally:
            os.unlink(sample)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("no Kafka broker answered at 127.0.0.1:1 within 3 s", p.stderr)
        self.assertIn("nothing was published", p.stderr)
        self.assertLess(took, 30)


if __name__ == "__main__":
    unittest.main(verbosity=2)
