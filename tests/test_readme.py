"""The README's first screen states measured lesson times: they must be the ones the last refresh measured."""

from rlhf_lessons import course


def test_readme_lesson_times_come_from_the_last_measurement():
    text = course.README.read_text()
    assert course.readme_with_times(text) == text, "README times are stale: run `make notebooks`"


def test_every_lesson_notebook_is_in_the_table_with_a_measured_time():
    table = course.lesson_table()
    for name, _ in course.available_lessons():
        assert name in table
    assert "not measured yet" not in table, "a lesson has no measured time: run `make notebooks`"
