from pipelines.contract_doc import DOC_PATH, render


def test_contract_doc_is_generated_from_the_schema():
    assert DOC_PATH.read_text(encoding="utf-8") == render(), "run `make docs`"
