import logging

from serving.config import Settings


def test_dev_mode_banner_formats_and_says_dev_mode(caplog):
    with caplog.at_level(logging.WARNING):
        Settings(dev_mode=True).warn_if_dev()
    text = "\n".join(r.getMessage() for r in caplog.records)  # raises if the format is broken
    assert "DEV MODE" in text and "PUBLIC dev secret" in text
