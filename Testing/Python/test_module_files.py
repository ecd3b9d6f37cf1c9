"""The Slicer extension's files, checked without Slicer: the module script,
its Qt Designer file, both CMakeLists.txt and the icons agree with each other
and with the source tree."""
from __future__ import annotations

import ast
import json
import os
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from conftest import maintainer_tool

if sys.version_info >= (3, 11):
    import tomllib
else:  # Slicer 5.6-5.8 ship Python 3.9
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "BrainTumorCNN"
MODULE_SCRIPT = MODULE_DIR / "BrainTumorCNN.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "BrainTumorCNN.ui"
ICONS = (REPO / "BrainTumorCNN.png", MODULE_DIR / "Resources" / "Icons" / "BrainTumorCNN.png")

#: Qt widget classes a .ui may use without a <customwidget> entry.
QT_WIDGETS = {"QWidget", "QLabel", "QCheckBox", "QComboBox", "QPushButton", "QProgressBar", "QTableWidget",
              "QDoubleSpinBox", "QSpinBox", "QLineEdit", "QGroupBox", "QFrame", "QRadioButton", "QToolButton"}
QT_LAYOUTS = {"QVBoxLayout", "QHBoxLayout", "QFormLayout", "QGridLayout"}
#: Widgets the user acts on or reads: each must be wired (used by the script or bound to the parameter node).
INTERACTIVE = {"qMRMLNodeComboBox", "QComboBox", "QCheckBox", "QPushButton", "QDoubleSpinBox", "QSpinBox",
               "ctkSliderWidget", "QLineEdit", "QProgressBar", "QTableWidget"}


# --------------------------------------------------------------------------- helpers
def module_ast() -> ast.Module:
    return ast.parse(MODULE_SCRIPT.read_text(), filename=str(MODULE_SCRIPT))


def classes() -> dict:
    return {node.name: node for node in module_ast().body if isinstance(node, ast.ClassDef)}


def parameter_fields() -> dict:
    """Field name -> annotation source of the @parameterNodeWrapper class."""
    wrapped = [c for c in classes().values()
               if any(isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in c.decorator_list)]
    assert len(wrapped) == 1, "exactly one @parameterNodeWrapper class expected"
    return {s.target.id: ast.unparse(s.annotation) for s in wrapped[0].body if isinstance(s, ast.AnnAssign)}


def module_constant(name: str):
    for node in module_ast().body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{MODULE_SCRIPT.name} defines no constant {name}")


def ui_root() -> ET.Element:
    return ET.parse(UI_FILE).getroot()


def ui_widgets() -> dict:
    """objectName -> element of every widget in the .ui."""
    widgets = {}
    for element in ui_root().iter("widget"):
        name = element.get("name")
        assert name not in widgets, f"{UI_FILE.name}: objectName {name!r} used twice"
        widgets[name] = element
    return widgets


def bound_parameters() -> dict:
    """objectName -> SlicerParameterName of widgets bound to the parameter node."""
    out = {}
    for name, element in ui_widgets().items():
        for prop in element.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                out[name] = prop.find("string").text
    return out


def ui_names_used_by_script() -> set:
    return set(re.findall(r"self\.ui\.(\w+)", MODULE_SCRIPT.read_text()))


def cmake_commands(path: Path) -> list:
    """(command, [arguments]) of a CMakeLists.txt, comments removed, quoted strings kept whole."""
    text = re.sub(r"#[^\n]*", "", path.read_text())
    out = []
    for match in re.finditer(r"(\w+)\s*\(((?:[^()]|\([^()]*\))*)\)", text):
        args = re.findall(r'"[^"]*"|[^\s"]+', match.group(2))
        out.append((match.group(1).lower(), [a.strip('"') for a in args]))
    return out


def cmake_set(path: Path, variable: str) -> list:
    values = [args[1:] for command, args in cmake_commands(path) if command == "set" and args[0] == variable]
    assert len(values) == 1, f"{path}: {variable} is set {len(values)} times"
    name = {args[0]: args[1] for command, args in cmake_commands(path) if command == "set" and len(args) == 2}
    return [re.sub(r"\$\{(\w+)\}", lambda m: name.get(m.group(1), m.group(0)), v) for v in values[0]]


# --------------------------------------------------------------------------- module script
def test_module_script_compiles_and_defines_the_four_slicer_classes():
    compile(MODULE_SCRIPT.read_text(), str(MODULE_SCRIPT), "exec")
    bases = {name: [ast.unparse(b) for b in c.bases] for name, c in classes().items()}
    assert bases["BrainTumorCNN"] == ["ScriptedLoadableModule"]
    assert bases["BrainTumorCNNWidget"][0] == "ScriptedLoadableModuleWidget"
    assert bases["BrainTumorCNNLogic"] == ["ScriptedLoadableModuleLogic"]
    assert bases["BrainTumorCNNTest"] == ["ScriptedLoadableModuleTest"]
    logic = {f.name: f for f in classes()["BrainTumorCNNLogic"].body if isinstance(f, ast.FunctionDef)}
    assert [a.arg for a in logic["process"].args.args] == ["self", "t1", "t1c", "t2", "flair", "model", "options",
                                                           "output"]


def test_module_title_category_and_citation():
    init = next(f for f in classes()["BrainTumorCNN"].body if isinstance(f, ast.FunctionDef))
    parent = {ast.unparse(s.targets[0]): s.value for s in init.body if isinstance(s, ast.Assign)}
    assert ast.literal_eval(parent["self.parent.title"]) == "Brain Tumor CNN"
    assert ast.literal_eval(parent["self.parent.categories"]) == ["Segmentation"]
    assert ast.literal_eval(parent["self.parent.contributors"])
    assert "Havaei" in ast.literal_eval(parent["self.parent.acknowledgementText"])
    assert "2017" in ast.literal_eval(parent["self.parent.acknowledgementText"])


def test_module_loads_without_pytorch():
    """Slicer imports every module at start-up: the module's top-level engine
    imports must not need PyTorch, which is installed on first use."""
    imports = [ast.unparse(n) for n in module_ast().body if isinstance(n, (ast.Import, ast.ImportFrom))
               and "BrainTumorCNNLib" in ast.unparse(n)]
    assert imports, "the module imports nothing from BrainTumorCNNLib at top level?"
    code = "\n".join(imports + ["import sys", "assert 'torch' not in sys.modules, 'imports torch'"])
    env = dict(os.environ, PYTHONPATH=str(MODULE_DIR))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_install_requirements_are_pinned_as_in_pyproject():
    dependencies = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    for constant in ("REQUIREMENTS", "TEST_REQUIREMENTS"):
        for module, requirement in module_constant(constant).items():
            assert requirement in dependencies, f"{constant}[{module!r}] = {requirement!r} is not in pyproject.toml"
            assert re.match(rf"{module}\b", requirement)


# --------------------------------------------------------------------------- .ui file
def test_ui_is_a_slicer_module_widget_with_known_classes():
    root = ui_root()
    assert root.tag == "ui" and root.findtext("class") == "BrainTumorCNN"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "BrainTumorCNN"
    custom = {c.findtext("class"): c for c in root.iter("customwidget")}
    for name, cls in custom.items():
        assert re.match(r"(ctk|qMRML|qSlicer)\w+$", name), f"custom widget {name} is not a CTK / Slicer widget"
        assert cls.findtext("header") == f"{name}.h"
    for element in root.iter("widget"):
        cls = element.get("class")
        assert cls in QT_WIDGETS or cls in custom, f"widget {element.get('name')}: class {cls} not declared"
    for element in root.iter("layout"):
        assert element.get("class") in QT_LAYOUTS


def test_every_node_selector_gets_the_scene():
    widgets = ui_widgets()
    connections = {(c.findtext("sender"), c.findtext("signal"), c.findtext("receiver"), c.findtext("slot"))
                   for c in ui_root().iter("connection")}
    for sender, _, receiver, _ in connections:
        assert sender in widgets and receiver in widgets, f"connection {sender} -> {receiver}: unknown widget"
    selectors = [n for n, e in widgets.items() if e.get("class") == "qMRMLNodeComboBox"]
    assert len(selectors) == 8  # the four inputs, the output, the prior T1c and both segmentations compared
    for name in selectors:
        assert ("BrainTumorCNN", "mrmlSceneChanged(vtkMRMLScene*)", name, "setMRMLScene(vtkMRMLScene*)") \
            in connections, f"{name} never receives the scene: it would list no nodes"


def test_script_and_ui_name_the_same_widgets():
    widgets = ui_widgets()
    used = ui_names_used_by_script()
    assert used - set(widgets) == set(), "used in BrainTumorCNN.py but absent from the .ui"
    wired = used | set(bound_parameters())
    unwired = {n for n, e in widgets.items() if e.get("class") in INTERACTIVE} - wired
    assert unwired == set(), "interactive widgets neither used by the script nor bound to the parameter node"


def test_ui_bindings_match_the_parameter_node():
    fields = parameter_fields()
    bound = bound_parameters()
    assert set(bound.values()) - set(fields) == set(), "SlicerParameterName naming no parameter"
    # the model selector is filled from the registry by the widget; every other choice is bound
    assert set(fields) - set(bound.values()) == {"model"}
    widgets = ui_widgets()
    for widget, field in bound.items():
        cls = widgets[widget].get("class")
        if cls == "qMRMLNodeComboBox":
            node_types = [s.text for s in widgets[widget].find("property[@name='nodeTypes']").iter("string")]
            assert node_types == [fields[field]], f"{widget} lists {node_types}, parameter {field} is {fields[field]}"
        else:
            expected = {"QCheckBox": "bool", "QDoubleSpinBox": "float", "QComboBox": "str", "QLineEdit": "str"}[cls]
            assert re.match(rf"(Annotated\[)?{expected}\b", fields[field]), f"{widget} ({cls}) bound to {fields[field]}"
    inputs = ("t1Selector", "t1cSelector", "t2Selector", "flairSelector")
    assert [fields[bound[s]] for s in inputs] == ["vtkMRMLScalarVolumeNode"] * 4
    output = widgets["outputSegmentationSelector"]
    props = {p.get("name"): p[0].text for p in output.findall("property")}
    assert props["noneEnabled"] == props["addEnabled"] == "true"
    assert "new" in props["noneDisplay"].lower()


def test_the_precision_parameter_offers_the_engines_precisions_and_defaults_to_auto():
    from BrainTumorCNNLib.running.inference import PRECISIONS
    (choice,) = [n for n in ast.walk(ast.parse(parameter_fields()["precision"]))
                 if isinstance(n, ast.Call) and ast.unparse(n.func) == "Choice"]
    assert tuple(ast.literal_eval(choice.args[0])) == PRECISIONS
    assert re.search(r"\n    precision: .*= \"auto\"", MODULE_SCRIPT.read_text())


def test_cleanup_defaults_come_from_the_engine():
    source = MODULE_SCRIPT.read_text()
    for field, config in (("minimumVolumeMl", "min_volume_ml"), ("removeFlat", "drop_flat"),
                          ("largestOnly", "keep_largest_only")):
        assert re.search(rf"{field}: .*= CleanupConfig\.{config}\n", source), field
        assert re.search(rf"{config}=parameters\.{field}\b", source), f"{field} is not passed to CleanupConfig"
    assert re.search(r"model_cleanup=parameters\.removeDistant\b", source), "removeDistant is not passed on"
    assert re.search(r"edema_growth=parameters\.growEdema\b", source), "growEdema is not passed on"


# --------------------------------------------------------------------------- CMakeLists.txt
def test_top_cmakelists_describes_the_extension():
    path = REPO / "CMakeLists.txt"
    commands = cmake_commands(path)
    names = [c for c, _ in commands]
    assert names[0] == "cmake_minimum_required"
    assert ("project", ["BrainTumorCNN"]) in commands
    fields = {args[0]: args[1:] for c, args in commands if c == "set" and args[0].startswith("EXTENSION_")}
    for field in ("CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "DEPENDS"):
        assert fields.get(f"EXTENSION_{field}", [""])[0].strip(), f"EXTENSION_{field} missing or empty"
    assert fields["EXTENSION_CATEGORY"] == ["Segmentation"]
    assert fields["EXTENSION_DEPENDS"] == ["NA"]
    # no public address yet: set, and empty (test_no_invented_web_address checks every file)
    for field in ("HOMEPAGE", "ICONURL", "SCREENSHOTURLS"):
        assert fields[f"EXTENSION_{field}"] == [""], f"EXTENSION_{field}"
    assert ("find_package", ["Slicer", "REQUIRED"]) in commands
    order = [c + "(" + " ".join(a) + ")" for c, a in commands if c in ("include", "add_subdirectory")]
    assert order == ["include(${Slicer_USE_FILE})", "add_subdirectory(BrainTumorCNN)",
                     "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"]


def test_module_cmakelists_lists_every_script_of_the_source_tree():
    path = MODULE_DIR / "CMakeLists.txt"
    listed = cmake_set(path, "MODULE_PYTHON_SCRIPTS")
    assert len(listed) == len(set(listed)), "a script is listed twice"
    on_disk = {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.glob("*.py")}
    on_disk |= {p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "BrainTumorCNNLib").rglob("*.py")
                if "__pycache__" not in p.parts}
    assert on_disk - set(listed) == set(), "scripts missing from MODULE_PYTHON_SCRIPTS (Slicer would not ship them)"
    assert set(listed) - on_disk == set(), "MODULE_PYTHON_SCRIPTS lists files that do not exist"


def test_module_cmakelists_lists_every_resource():
    path = MODULE_DIR / "CMakeLists.txt"
    listed = cmake_set(path, "MODULE_PYTHON_RESOURCES")
    for resource in listed:
        assert (MODULE_DIR / resource).is_file(), f"listed resource {resource} does not exist"
    on_disk = {p.relative_to(MODULE_DIR).as_posix() for folder in ("Resources", "BrainTumorCNNLib/data")
               for p in (MODULE_DIR / folder).rglob("*") if p.is_file()}
    assert on_disk - set(listed) == set(), "resources missing from MODULE_PYTHON_RESOURCES"
    commands = cmake_commands(path)
    build = [args for c, args in commands if c == "slicermacrobuildscriptedmodule"]
    assert build and build[0][:2] == ["NAME", "${MODULE_NAME}"]
    assert ("slicer_add_python_unittest", ["SCRIPT", "${MODULE_NAME}.py"]) in commands
    text = re.sub(r"#[^\n]*", "", path.read_text())
    assert re.search(r"if\(BUILD_TESTING\)\s*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)\s*endif",
                     text)


def test_module_cmakelists_ships_the_models_where_the_registry_reads_them():
    from BrainTumorCNNLib.network import registry
    path = MODULE_DIR / "CMakeLists.txt"
    models = cmake_set(path, "MODULE_MODELS")
    assert set(models) <= set(registry.MODELS), "MODULE_MODELS names a model the registry does not know"
    assert {"TwoPathCNN", "InputCascadeCNN", "TwoPathCNN-1phase"} <= set(models)
    models_dir = REPO / "Resources" / "Models"
    shipped = {p.name.split(".")[0] for p in models_dir.glob("*") if p.suffix in (".safetensors", ".json")} \
        if models_dir.is_dir() else set()
    assert shipped - set(models) == set(), "weights in Resources/Models that the extension would not ship"
    # source: the checkout's Resources/Models, as the registry finds it in a checkout
    assert cmake_set(path, "_models_source_dir") == ["${CMAKE_CURRENT_SOURCE_DIR}/../Resources/Models"]
    assert registry.SOURCE_MODELS_DIR == models_dir
    if "BRAINTUMORCNN_MODELS" not in os.environ and not registry.INSTALLED_MODELS_DIR.is_dir():
        assert registry.MODELS_DIR == models_dir
    # build tree and extension package: inside the package, where the registry looks first
    package = Path(registry.__file__).resolve().parents[1]
    inside = registry.INSTALLED_MODELS_DIR.relative_to(package.parent).as_posix()
    assert inside == "BrainTumorCNNLib/models"
    assert cmake_set(path, "_models_build_dir") == ["${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/" + inside]
    assert cmake_set(path, "_models_install_dir") == ["${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/" + inside]
    text = re.sub(r"#[^\n]*", "", path.read_text())
    assert "configure_file(${_models_source_dir}/${_file} ${_models_build_dir}/${_file} COPYONLY)" in text
    assert "install(FILES ${_models_source_dir}/${_file} DESTINATION ${_models_install_dir}" in text
    # a wheel puts them in the same place (Testing/Python/test_packaging.py installs one)
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"]["BrainTumorCNNLib.models"] == "Resources/Models"
    assert "BrainTumorCNNLib.models" in setuptools["packages"]


def test_shipped_model_cards_carry_the_dice_the_selector_shows():
    """Each shipped card has validation Dice per region (shown in the model selector)."""
    from BrainTumorCNNLib import labels
    from BrainTumorCNNLib.network import registry
    for name, spec in registry.shipped().items():
        dice = json.loads(spec.card_path.read_text()).get("validation", {}).get("dice", {})
        assert set(dice) <= set(labels.REGIONS) and dice, f"{spec.card_path}: no validation Dice per region"


# --------------------------------------------------------------------------- web addresses
#: Web addresses the project may name: only ones that exist.  It has no public home yet (an address of
#: its own enters here once it is published); others' documentation that the README cites.
KNOWN_ADDRESSES: set = {"https://distributed.dask.org",  # Dask.distributed documentation
                        "https://pypi.org/project/deepbet",  # the brain extractor (brain_extraction.py)
                        "https://github.com/KitwareMedical/trame-slicer"}  # the web page's views (frontends/web/)
TEXT_SUFFIXES = {".py", ".md", ".txt", ".ui", ".toml", ".cfg", ".json", ".cmake", ""}
NOT_SOURCE = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis", "runs", ".cache",
              ".whl", "braintumorcnn-demo"}


def test_no_invented_web_address():
    found = {}
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [d for d in subfolders if d not in NOT_SOURCE and not d.endswith(".egg-info")]
        for path in (Path(folder) / f for f in files):
            if path.suffix not in TEXT_SUFFIXES:
                continue
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            for address in re.findall(r"https?://[^\s\"'<>)]+", text):
                if address not in KNOWN_ADDRESSES:
                    found.setdefault(address, []).append(path.relative_to(REPO).as_posix())
    assert found == {}, "web addresses that are not known to exist"


# --------------------------------------------------------------------------- icons
@pytest.mark.parametrize("path", ICONS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_icon_is_a_128_pixel_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, chunk, width, height, depth, colour = struct.unpack(">I4sIIBB", data[8:26])
    assert chunk == b"IHDR" and (width, height) == (128, 128)
    assert depth == 8 and colour in (2, 6), "8-bit RGB or RGBA expected"


def test_icons_are_the_generator_output():
    assert ICONS[0].read_bytes() == ICONS[1].read_bytes(), "extension and module icons differ"
    make_icon = maintainer_tool("make_icon")
    stored = mpimg.imread(ICONS[0])
    assert np.abs(stored - make_icon.draw()).max() <= 1 / 255 + 1e-6, "icon differs from make_icon.py's drawing"
    alpha = stored[..., 3]
    assert alpha[0, 0] == 0 and alpha[64, 64] == 1, "transparent corners, opaque brain expected"
    for key, minimum_pixels in (("edema", 300), ("enhancing", 100), ("necrosis", 30)):
        close = np.abs(stored[..., :3] - np.array(make_icon.TISSUES[key].color)).max(axis=-1) < 0.15
        assert close.sum() >= minimum_pixels, f"icon shows too little of the label table's {key} colour"
