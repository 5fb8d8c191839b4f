"Runs in the steering-vectors peer env (transformers 4.x): CAA and PCA vectors and steered logits for the lab's parity test."
import json, sys
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from steering_vectors import train_steering_vector, pca_aggregator

spec = json.load(open(sys.argv[1]))
torch.manual_seed(0)
# transformers 5 writes rope_theta inside `rope_parameters`, which 4.x does not read (it would silently use its default
# 10000 instead of the model's 100000 and compute different activations): pass it explicitly
cfg = json.load(open(f"{spec['model_dir']}/config.json"))
extra = {'rope_theta': cfg['rope_parameters']['rope_theta']} if 'rope_theta' not in cfg and 'rope_parameters' in cfg else {}
model = AutoModelForCausalLM.from_pretrained(spec['model_dir'], torch_dtype=torch.float32, **extra).eval()
# a tokenizer saved by transformers 5 names its class TokenizersBackend, unknown to 4.x: read tokenizer.json directly
tok = PreTrainedTokenizerFast(tokenizer_file=f"{spec['model_dir']}/tokenizer.json")
tok.eos_token = tok.pad_token = spec['eos_token']
pairs = [tuple(p) for p in spec['pairs']]
layers = spec['layers']
out = {}
mean = train_steering_vector(model, tok, pairs, layers=layers, read_token_index=spec['read_index'], batch_size=1)
pca = train_steering_vector(model, tok, pairs, layers=layers, read_token_index=spec['read_index'], batch_size=1,
                            aggregator=pca_aggregator())
out['caa'] = {str(l): v.tolist() for l, v in mean.layer_activations.items()}
out['pca'] = {str(l): v.tolist() for l, v in pca.layer_activations.items()}
ids = tok(spec['prompt'], return_tensors='pt').input_ids
with torch.no_grad():
    with mean.apply(model, multiplier=spec['multiplier']):
        out['steered_logits'] = model(ids).logits[0, -1].tolist()
    # the peer's position mask counts positions within each forward call: under generate with a KV cache,
    # a decoded token is always at index 0 of its call, so min_token_index > 0 never steers it
    start = ids.shape[1]
    with mean.apply(model, multiplier=spec['multiplier'], min_token_index=start):
        kw = dict(max_new_tokens=spec['max_new_tokens'], do_sample=False, pad_token_id=tok.eos_token_id)
        out['gen_cache'] = model.generate(ids, use_cache=True, **kw)[0].tolist()
        out['gen_nocache'] = model.generate(ids, use_cache=False, **kw)[0].tolist()
json.dump(out, open(spec['out'], 'w'))
