"""nbgrader's feedback preprocessors as Ananke's courses use them (runs in the grader's lab).

``GenerateFeedback`` exports with nbconvert's ``HTMLExporter``, whose default config
sets ``NbConvertBase.display_data_priority`` for every preprocessor. nbgrader's
``NbGraderPreprocessor`` redeclares that trait without ``config=True``, so traitlets
warns in every feedback log ("Config option `display_data_priority` not recognized by
`ClearHiddenTests`"), as it did for ``GetGrades`` before nbgrader declared the trait
configurable there (nbgrader PR 687). These subclasses do the same for the two
preprocessors a course adds to the feedback (``ananke_hub/courses/settings.py``).
Neither uses the value: accepting it changes nothing but the log.
"""

from nbgrader.preprocessors import ClearHiddenTests as _ClearHiddenTests
from nbgrader.preprocessors import Execute as _Execute
from traitlets import List


def _configurable_priority(cls) -> List:
    return List(cls.class_traits()["display_data_priority"].default_value).tag(config=True)


class ClearHiddenTests(_ClearHiddenTests):
    display_data_priority = _configurable_priority(_ClearHiddenTests)


class Execute(_Execute):
    display_data_priority = _configurable_priority(_Execute)
