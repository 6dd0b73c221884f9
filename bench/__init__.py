"""socks5d's benchmark: `python3 -m bench` runs every scenario against every target.

Modules: cli (options, entering the network namespace), runner (repetitions, progress, the
results dictionary), targets (the proxies), scenarios (what is measured), loadgen (driving the
C load generator, loadgen.c), procs (processes and /proc), netns, build, report (JSON,
Markdown, chart), and gssapi: `python3 -m bench.gssapi`, GSS-API-protected throughput of
socks5d and Dante at each protection level. bench/README.md explains the figures.
"""
