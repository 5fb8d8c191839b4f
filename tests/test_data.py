"Corpora: deterministic disjoint splits, and clear errors."
import pytest
from llm_lab.data import load_corpus, read_fortunes, token_blocks, LANGUAGES, split_of
from llm_lab.models import tiny_llama


@pytest.mark.parametrize('lang', list(LANGUAGES))
def test_fortunes_splits_are_disjoint_and_sized(lang):
    c = load_corpus('fortunes', lang)
    assert len(c.test) > 50 and len(c.calibration) > 50 and len(c.train) > 400
    assert not (set(c.train) & set(c.test)) and not (set(c.calibration) & set(c.test)) and not (set(c.train) & set(c.calibration))
    assert all(split_of(d) == 'test' for d in c.test)


def test_splits_do_not_depend_on_order():
    docs = read_fortunes('de')
    a, b = load_corpus('fortunes', 'de'), None
    from llm_lab.data import corpus_from_docs
    b = corpus_from_docs('x', list(reversed(docs)))
    assert sorted(a.test) == sorted(b.test)


def test_missing_debian_package_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv('LLM_LAB_FORTUNES_DIR', str(tmp_path))
    with pytest.raises(FileNotFoundError, match='apt-get install fortunes-it'): load_corpus('fortunes', 'it')


def test_empty_corpus_is_an_error(tmp_path):
    (tmp_path / 'empty.txt').write_text('\n\n   \n')
    with pytest.raises(ValueError, match='empty'): load_corpus(str(tmp_path / 'empty.txt'))
    with pytest.raises(ValueError, match='no .txt files'): load_corpus(str(tmp_path / 'sub')) if (tmp_path / 'sub').mkdir() is None else None


def test_unknown_language_and_split():
    with pytest.raises(ValueError, match='languages'): load_corpus('fortunes', 'fr')
    with pytest.raises(ValueError, match='unknown split'): load_corpus('fortunes', 'en').split('dev')


def test_token_blocks_shape_and_content():
    _, tok = tiny_llama()
    b = token_blocks(tok, ['hello world'] * 10, block_size=16, n_blocks=4)
    assert b.shape == (4, 16)
    assert tok.decode(b[0]) == 'hello world\n\nhel'
