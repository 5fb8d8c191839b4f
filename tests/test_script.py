"`import llm_lab` from a plain Python script: KV-quantized generation on the embedded model."
import subprocess, sys, textwrap

SCRIPT = textwrap.dedent('''
    import llm_lab
    from llm_lab.models import load_model, chat_prompt
    from llm_lab.kv import KIVICache
    model, tok = load_model()
    enc = tok(chat_prompt(tok, "Tell me a long story about a lighthouse keeper."), return_tensors="pt")
    cache = KIVICache(bits=2, group_size=32, residual_length=32)
    out = model.generate(**enc, past_key_values=cache, max_new_tokens=64, min_new_tokens=64, do_sample=False)
    print(tok.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True))
    cache.flush()
    print("BITS", cache.bits_per_element(), cache.memory_bits() < cache.fp_bits(32) / 2)
''')


def test_plain_script(tmp_path):
    p = tmp_path / 'use_lab.py'; p.write_text(SCRIPT)
    r = subprocess.run([sys.executable, str(p)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    bits_line = [l for l in r.stdout.splitlines() if l.startswith('BITS')][0].split()
    assert float(bits_line[1]) < 16 and bits_line[2] == 'True'   # float32 model: a 32-bit cache would be the baseline
    assert len(r.stdout.strip().splitlines()[0]) > 0
