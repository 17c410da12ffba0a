"""A study's report: which runs count and their fits (`results`), the tables (`tables`), the
verdict in words (`verdict_text`), the figures (`figures`), the HTML page (`html`), the L(N, D)
allocation section of studies with several budgets per size (`lnd`, `lnd_text`,
`lnd_figure`), and writing DIR/report/ (`write`). Torch-free: `study report` never loads torch.

May import: study (the folder and plan), fit, runs (reading run folders), atomic_write, config.
Never cli, bench, the training loops or the method registry.
"""
