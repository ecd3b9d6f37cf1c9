"""The Slicer module's widget against a real Qt (PySide6, offscreen), without a Slicer application.

The .ui is loaded by Qt's QUiLoader, Slicer's and CTK's own classes built as the base class the
.ui declares for each (<customwidgets>/<extends>).  On that real widget tree:
- every `self.ui.<name>` of BrainTumorCNN.py exists, and every member the script reads, sets or
  calls on it (through aliases too) is a property or method of its class;
- every signal the script or the .ui connects exists on its sender's class, every .ui slot on its
  receiver's;
- every parameter-node field is bound (SlicerParameterName, as Slicer's parameterNodeWrapper finds
  it) to a widget of a class Slicer's GUI connectors accept for the field's type, or (the model) is
  written by a handler connected to its selector.
For Slicer's classes, whose members Qt cannot see here, SLICER_CLASSES lists what their headers
declare.  The last tests break the widget on purpose to show each check fails.
"""
from __future__ import annotations

import ast
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from PySide6.QtCore import QFile, QIODevice, QMetaMethod, QMetaObject  # noqa: E402
from PySide6.QtUiTools import QUiLoader  # noqa: E402
from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODULE_SCRIPT = REPO / "BrainTumorCNN" / "BrainTumorCNN.py"
UI_FILE = REPO / "BrainTumorCNN" / "Resources" / "UI" / "BrainTumorCNN.ui"

#: Members of the Slicer / CTK classes the .ui uses beyond their declared Qt base, from their headers:
#: Slicer Libs/MRML/Widgets/qMRMLWidget.h and qMRMLNodeComboBox.h, CTK Libs/Widgets/ctkCollapsibleButton.h.
SLICER_CLASSES = {
    "qMRMLWidget": {
        "signals": {"mrmlSceneChanged(vtkMRMLScene*)"},
        "slots": {"setMRMLScene(vtkMRMLScene*)"},
        "members": {"mrmlScene", "setMRMLScene"},
    },
    "qMRMLNodeComboBox": {
        "signals": {"currentNodeChanged(vtkMRMLNode*)", "currentNodeChanged(bool)", "currentNodeIDChanged(QString)",
                    "nodeActivated(vtkMRMLNode*)", "nodeAdded(vtkMRMLNode*)", "nodeAddedByUser(vtkMRMLNode*)",
                    "nodeAboutToBeRemoved(vtkMRMLNode*)", "currentNodeRenamed(QString)",
                    "nodeAboutToBeEdited(vtkMRMLNode*)"},
        "slots": {"setMRMLScene(vtkMRMLScene*)", "setCurrentNode(vtkMRMLNode*)", "setCurrentNodeID(QString)",
                  "setCurrentNodeIndex(int)", "addNode()", "removeCurrentNode()", "editCurrentNode()",
                  "renameCurrentNode()"},
        "members": {"currentNode", "setCurrentNode", "currentNodeID", "setCurrentNodeID", "nodeTypes",
                    "noneEnabled", "addEnabled", "removeEnabled", "renameEnabled", "noneDisplay", "mrmlScene",
                    "setMRMLScene"},
    },
    "ctkCollapsibleButton": {  # a QAbstractButton in CTK; the .ui declares QWidget
        "signals": {"contentsCollapsed(bool)", "clicked(bool)", "toggled(bool)"},
        "slots": set(),
        "members": {"collapsed", "text", "checked"},
    },
}
#: Widget classes Slicer's parameterNodeWrapper connects to a field of each type (its guiConnectors.py,
#: which matches the widget's exact class).  A str field on a QComboBox needs a Choice annotation.
CONNECTORS = {"bool": {"QCheckBox", "QPushButton"}, "float": {"QDoubleSpinBox", "ctkSliderWidget"},
              "int": {"QSpinBox", "QSlider"}, "str": {"QComboBox", "QLineEdit", "QTextEdit"},
              "node": {"qMRMLNodeComboBox"}}
#: Members PythonQt adds to every QObject in Slicer (not Qt members).
PYTHONQT_MEMBERS = {"connect", "disconnect"}


# --------------------------------------------------------------------------- loading the .ui
class SlicerStandIns(QUiLoader):
    """QUiLoader that builds each Slicer / CTK class as the base the .ui declares for it and
    remembers the declared class of every widget."""

    def __init__(self, bases: dict):
        super().__init__()
        self.bases, self.declared = bases, {}

    def createWidget(self, class_name, parent=None, name=""):
        widget = super().createWidget(self.bases.get(class_name, class_name), parent, name)
        self.declared[name] = class_name
        return widget


@pytest.fixture(scope="module")
def app():
    return QApplication.instance() or QApplication([])


def load_ui(path: Path):
    """(root widget, objectName -> declared class) of a .ui file."""
    root = ET.parse(path).getroot()
    bases = {c.findtext("class"): c.findtext("extends") for c in root.iter("customwidget")}
    loader = SlicerStandIns(bases)
    file = QFile(str(path))
    assert file.open(QIODevice.ReadOnly)
    widget = loader.load(file)
    file.close()
    assert widget is not None, loader.errorString()
    return widget, loader.declared


def widgets_by_name(root) -> dict:
    found = {w.objectName(): w for w in root.findChildren(QWidget) if w.objectName()}
    found[root.objectName()] = root
    return found


def qt_class(widget) -> str:
    return widget.metaObject().className()


def qt_has_signal(widget, signature: str) -> bool:
    return widget.metaObject().indexOfSignal(QMetaObject.normalizedSignature(signature).data().decode()) >= 0


def qt_has_slot(widget, signature: str) -> bool:
    meta, normal = widget.metaObject(), QMetaObject.normalizedSignature(signature).data().decode()
    index = meta.indexOfMethod(normal)
    return index >= 0 and meta.method(index).methodType() in (QMetaMethod.MethodType.Slot,
                                                              QMetaMethod.MethodType.Signal)


def qt_has_member(widget, name: str) -> bool:
    return widget.metaObject().indexOfProperty(name) >= 0 or hasattr(widget, name)


# --------------------------------------------------------------------------- reading the script
def ui_use(source: str):
    """From the module script: ({widget: {members used}}, [(widget, signal signature)],
    {widget: handler method name}) for `self.ui.<widget>`, also through local aliases
    (`selector = self.ui.x`, `for section in (self.ui.a, self.ui.b)`)."""
    tree = ast.parse(source)

    def ui_name(node):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "ui" and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "self"):
            return node.attr
        return None

    members, signals, handlers = {}, [], {}
    for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        aliases = {}
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if ui_name(node.value):
                    aliases[node.targets[0].id] = [ui_name(node.value)]
            if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and isinstance(node.iter, ast.Tuple):
                names = [ui_name(e) for e in node.iter.elts]
                if names and all(names):
                    aliases[node.target.id] = names
        for node in ast.walk(function):
            if not isinstance(node, ast.Attribute):
                continue
            widgets = [ui_name(node.value)] if ui_name(node.value) else aliases.get(getattr(node.value, "id", None))
            if ui_name(node):
                members.setdefault(ui_name(node), set())
            for widget in widgets or ():
                members.setdefault(widget, set()).add(node.attr)
        for call in (n for n in ast.walk(function) if isinstance(n, ast.Call)):
            target = call.func
            if not (isinstance(target, ast.Attribute) and target.attr == "connect"):
                continue
            if ui_name(target.value) and call.args and isinstance(call.args[0], ast.Constant):
                widget, signature = ui_name(target.value), call.args[0].value  # PythonQt: x.connect("sig(int)", f)
            elif isinstance(target.value, ast.Attribute) and ui_name(target.value.value):
                widget, signature = ui_name(target.value.value), target.value.attr  # x.sig.connect(f)
            else:
                continue
            signals.append((widget, signature))
            handler = call.args[-1]
            if isinstance(handler, ast.Attribute) and isinstance(handler.value, ast.Name):
                handlers[widget] = handler.attr
    return members, signals, handlers


def parameter_fields(source: str) -> dict:
    """Field -> annotation source of the @parameterNodeWrapper class."""
    tree = ast.parse(source)
    (wrapped,) = [c for c in tree.body if isinstance(c, ast.ClassDef)
                  and any(ast.unparse(d) == "parameterNodeWrapper" for d in c.decorator_list)]
    return {s.target.id: ast.unparse(s.annotation) for s in wrapped.body if isinstance(s, ast.AnnAssign)}


def parameter_defaults(source: str) -> dict:
    """Field -> default value of the @parameterNodeWrapper class, where it is a literal."""
    tree = ast.parse(source)
    (wrapped,) = [c for c in tree.body if isinstance(c, ast.ClassDef)
                  and any(ast.unparse(d) == "parameterNodeWrapper" for d in c.decorator_list)]
    defaults = {}
    for statement in (s for s in wrapped.body if isinstance(s, ast.AnnAssign) and s.value is not None):
        try:
            defaults[statement.target.id] = ast.literal_eval(statement.value)
        except ValueError:
            pass
    return defaults


def field_kind(annotation: str) -> str:
    inner = re.sub(r"^Annotated\[(\w+).*\]$", r"\1", annotation)
    return "node" if inner.startswith("vtkMRML") else inner


def handler_copies_widget_to_parameter(source: str, method: str, widget: str, field: str) -> bool:
    """Whether `method` sets the parameter `field` from `self.ui.<widget>` (a hand-made binding)."""
    tree = ast.parse(source)
    for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == method):
        for node in ast.walk(function):
            if (isinstance(node, ast.Assign) and f"self.ui.{widget}" in ast.unparse(node.value)
                    and any(ast.unparse(t) == f"self._parameterNode.{field}" for t in node.targets)):
                return True
    return False


# --------------------------------------------------------------------------- the checks
def widget_problems(ui: Path, source: str) -> list:
    root, declared = load_ui(ui)
    widgets = widgets_by_name(root)
    members, _, _ = ui_use(source)
    problems = []
    for name, used in sorted(members.items()):
        if name not in widgets:
            problems.append(f"self.ui.{name}: no such widget in {ui.name}")
            continue
        widget, cls = widgets[name], declared.get(name, qt_class(widgets[name]))
        extra = SLICER_CLASSES.get(cls, {}).get("members", set())
        for member in sorted(used - PYTHONQT_MEMBERS):
            if not (qt_has_member(widget, member) or member in extra):
                problems.append(f"self.ui.{name}.{member}: {cls} has no such property or method")
    return problems


def signal_problems(ui: Path, source: str) -> list:
    root, declared = load_ui(ui)
    widgets = widgets_by_name(root)
    _, signals, _ = ui_use(source)
    connections = [(c.findtext("sender"), c.findtext("signal"), c.findtext("receiver"), c.findtext("slot"))
                   for c in ET.parse(ui).getroot().iter("connection")]
    problems = []

    def check(name, signature, kind):
        if name not in widgets:
            return problems.append(f"{name}: no such widget")
        cls = declared.get(name, qt_class(widgets[name]))
        if cls in SLICER_CLASSES:
            base = widgets[name]  # the declared Qt base, whose own signals and slots are inherited
            ok = signature in SLICER_CLASSES[cls][kind] or (qt_has_signal(base, signature) if kind == "signals"
                                                            else qt_has_slot(base, signature))
        elif "(" not in signature:  # x.sig.connect(f): a signal of that name, any arguments
            ok = any(widgets[name].metaObject().method(i).methodType() == QMetaMethod.MethodType.Signal
                     and widgets[name].metaObject().method(i).name().data().decode() == signature
                     for i in range(widgets[name].metaObject().methodCount()))
        else:
            ok = qt_has_signal(widgets[name], signature) if kind == "signals" else qt_has_slot(widgets[name],
                                                                                                 signature)
        if not ok:
            problems.append(f"{name} ({cls}) has no {kind[:-1]} {signature}")

    for name, signature in signals:
        check(name, signature, "signals")
    for sender, signal, receiver, slot in connections:
        check(sender, signal, "signals")
        check(receiver, slot, "slots")
    return problems


def binding_problems(ui: Path, source: str) -> list:
    root, declared = load_ui(ui)
    fields = parameter_fields(source)
    _, signals, handlers = ui_use(source)
    bound = {}
    for widget in root.findChildren(QWidget):  # as parameterNodeWrapper.connectGui finds them
        field = widget.property("SlicerParameterName")
        if field:
            bound.setdefault(field, []).append(widget)
    problems = [f"SlicerParameterName {f!r} names no parameter" for f in sorted(set(bound) - set(fields))]
    for field, annotation in fields.items():
        if field not in bound:
            if not any(handler_copies_widget_to_parameter(source, method, w, field) for w, method in handlers.items()):
                problems.append(f"parameter {field} is bound to no widget and set from none by a connected handler")
            continue
        if len(bound[field]) > 1:
            problems.append(f"parameter {field} is bound to {len(bound[field])} widgets")
        widget = bound[field][0]
        cls = declared.get(widget.objectName(), qt_class(widget))
        kind = field_kind(annotation)
        if cls not in CONNECTORS.get(kind, set()):
            problems.append(f"parameter {field} ({annotation}) is bound to {widget.objectName()}, a {cls}: "
                            f"Slicer connects {kind} only to {sorted(CONNECTORS.get(kind, ()))}")
        elif cls == "QComboBox" and "Choice(" not in annotation:
            problems.append(f"parameter {field} on a QComboBox needs a Choice annotation")
        elif cls == "QCheckBox" and parameter_defaults(source).get(field, widget.isChecked()) != widget.isChecked():
            problems.append(f"parameter {field} defaults to {parameter_defaults(source)[field]} but "
                            f"{widget.objectName()} starts {'' if widget.isChecked() else 'un'}checked")
    return problems


# --------------------------------------------------------------------------- the widget as shipped
def test_every_widget_the_script_uses_exists_with_the_members_it_uses(app):
    members, _, _ = ui_use(MODULE_SCRIPT.read_text())
    assert {"modelSelector", "segmentButton", "volumesTable", "statusLabel"} <= set(members)
    assert {"addItem", "findData", "currentIndex", "count"} <= members["modelSelector"], "aliases not followed"
    assert widget_problems(UI_FILE, MODULE_SCRIPT.read_text()) == []


def test_every_connected_signal_and_slot_exists(app):
    _, signals, _ = ui_use(MODULE_SCRIPT.read_text())
    assert ("segmentButton", "clicked(bool)") in signals
    assert signal_problems(UI_FILE, MODULE_SCRIPT.read_text()) == []


def test_every_parameter_is_bound_to_a_widget_slicer_can_connect(app):
    root, declared = load_ui(UI_FILE)
    assert declared["t1Selector"] == "qMRMLNodeComboBox" and qt_class(widgets_by_name(root)["t1Selector"]) == "QWidget"
    assert binding_problems(UI_FILE, MODULE_SCRIPT.read_text()) == []


def test_the_preparation_section_offers_each_step_and_keeping_the_prepared_volumes(app):
    """Registration and resampling can each be turned off, the prepared volumes kept, from check boxes in
    the Preparation section bound to the parameters the logic builds the PreparationOptions from; the
    plan is shown in a label there."""
    root, _ = load_ui(UI_FILE)
    section = widgets_by_name(root)["preparationCollapsibleButton"]
    boxes = {w.property("SlicerParameterName"): w for w in section.findChildren(QWidget)
             if qt_class(w) == "QCheckBox"}
    assert set(boxes) == {"register", "resample", "keepPrepared"}
    label = widgets_by_name(section)["preparationLabel"]
    assert qt_class(label) == "QLabel" and label.wordWrap()
    source = MODULE_SCRIPT.read_text()
    (preparation,) = [f for f in ast.walk(ast.parse(source))
                      if isinstance(f, ast.FunctionDef) and f.name == "preparation"]
    (call,) = [c for c in ast.walk(preparation)
               if isinstance(c, ast.Call) and ast.unparse(c.func) == "PreparationOptions"]
    assert {k.arg: ast.unparse(k.value) for k in call.keywords} == {"register": "parameters.register",
                                                                   "resample": "parameters.resample"}
    members, _, _ = ui_use(source)
    assert "text" in members["preparationLabel"], "the plan is not shown"


def combo_choices(section: str, parameter: str) -> tuple:
    """The items of the combo box in `section` bound to `parameter`."""
    root, _ = load_ui(UI_FILE)
    (selector,) = [w for w in widgets_by_name(root)[section].findChildren(QWidget)
                   if w.property("SlicerParameterName") == parameter]
    assert qt_class(selector) == "QComboBox"
    return tuple(selector.itemText(i) for i in range(selector.count()))


def options_arguments() -> dict:
    """Keyword -> source of the engine options the module builds from its parameters (`options`)."""
    (options,) = [f for f in ast.walk(ast.parse(MODULE_SCRIPT.read_text()))
                  if isinstance(f, ast.FunctionDef) and f.name == "options"]
    (call,) = [c for c in ast.walk(options) if isinstance(c, ast.Call) and ast.unparse(c.func).endswith("Options")]
    return {k.arg: ast.unparse(k.value) for k in call.keywords}


def test_brain_extraction_is_chosen_in_the_preparation_section_among_the_engines_modes(app):
    from BrainTumorCNNLib.preparing.brain_extraction import MODES
    assert combo_choices("preparationCollapsibleButton", "brainExtraction") == MODES
    assert options_arguments()["brain_extraction"] == "parameters.brainExtraction"


def test_precision_is_chosen_in_the_model_section_among_the_engines_precisions(app):
    from BrainTumorCNNLib.running.inference import PRECISIONS
    assert combo_choices("modelCollapsibleButton", "precision") == PRECISIONS
    assert options_arguments()["precision"] == "parameters.precision"


# --------------------------------------------------------------------------- the checks can fail
def broken_ui(tmp_path: Path, old: str, new: str) -> Path:
    text = UI_FILE.read_text()
    assert old in text
    path = tmp_path / UI_FILE.name
    path.write_text(text.replace(old, new, 1))
    return path


def test_a_renamed_widget_is_found(app, tmp_path):
    ui = broken_ui(tmp_path, 'name="statusLabel"', 'name="statusText"')
    assert "self.ui.statusLabel: no such widget in BrainTumorCNN.ui" in widget_problems(ui, MODULE_SCRIPT.read_text())


def test_a_widget_of_another_class_is_found(app, tmp_path):
    ui = broken_ui(tmp_path, 'class="QComboBox" name="modelSelector"', 'class="QLineEdit" name="modelSelector"')
    problems = widget_problems(ui, MODULE_SCRIPT.read_text())
    assert "self.ui.modelSelector.addItem: QLineEdit has no such property or method" in problems
    ui = broken_ui(tmp_path, 'class="QCheckBox" name="flatCheckBox"', 'class="QRadioButton" name="flatCheckBox"')
    assert any("removeFlat" in p and "QRadioButton" in p for p in binding_problems(ui, MODULE_SCRIPT.read_text()))


def test_a_signal_that_does_not_exist_is_found(app, tmp_path):
    source = MODULE_SCRIPT.read_text().replace('segmentButton.connect("clicked(bool)"',
                                               'segmentButton.connect("pressed(bool)"')
    assert "segmentButton (QPushButton) has no signal pressed(bool)" in signal_problems(UI_FILE, source)
    ui = broken_ui(tmp_path, "<slot>setMRMLScene(vtkMRMLScene*)</slot>", "<slot>setScene(vtkMRMLScene*)</slot>")
    assert "t1Selector (qMRMLNodeComboBox) has no slot setScene(vtkMRMLScene*)" in signal_problems(
        ui, MODULE_SCRIPT.read_text())


def test_an_unbound_parameter_is_found(app, tmp_path):
    ui = broken_ui(tmp_path, "<string>labelmap</string>", "<string>labelMap</string>")
    problems = binding_problems(ui, MODULE_SCRIPT.read_text())
    assert "SlicerParameterName 'labelMap' names no parameter" in problems
    assert "parameter labelmap is bound to no widget and set from none by a connected handler" in problems
    source = MODULE_SCRIPT.read_text().replace("self._parameterNode.model = self.ui.modelSelector",
                                               "self._model = self.ui.modelSelector")
    assert "parameter model is bound to no widget and set from none by a connected handler" in binding_problems(UI_FILE,
                                                                                                          source)


def test_a_check_box_that_starts_otherwise_than_its_parameter_is_found(app, tmp_path):
    ui = broken_ui(tmp_path, """<string>Keep the prepared volumes in the scene</string>
        </property>
        <property name="checked">
         <bool>false</bool>""", """<string>Keep the prepared volumes in the scene</string>
        </property>
        <property name="checked">
         <bool>true</bool>""")
    assert binding_problems(ui, MODULE_SCRIPT.read_text()) == [
        "parameter keepPrepared defaults to False but keepPreparedCheckBox starts checked"]
