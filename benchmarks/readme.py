"""Write a benchmark's table into README.md between `<!-- NAME -->` and `<!-- /NAME -->`: the README shows what a script printed."""
import datetime, platform, re
from pathlib import Path
import torch

README = Path(__file__).resolve().parents[1] / 'README.md'

def machine() -> str:
    "One line: date, CPU or GPU, threads, torch version."
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else f'{platform.machine()} CPU, {torch.get_num_threads()} threads'
    return f'{datetime.date.today()}, {dev}, torch {torch.__version__}'

def update_readme(name: str, table: str, command: str) -> None:
    "Replace the block between the markers `name` in README.md by `table`, with the command and machine that produced it."
    text = README.read_text()
    start, end = f'<!-- {name} -->', f'<!-- /{name} -->'
    if start not in text or end not in text: raise SystemExit(f"README.md has no {start} ... {end} block to fill")
    block = f"{start}\n`{command}` ({machine()}):\n\n{table.strip()}\n{end}"
    README.write_text(re.sub(re.escape(start) + '.*?' + re.escape(end), lambda _: block, text, flags=re.S))
    print(f"README.md: {name} table updated")
