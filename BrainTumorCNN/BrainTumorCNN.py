"""3D Slicer module: brain tumor segmentation in T1, T1c, T2 and FLAIR MRI with
the convolutional networks of Havaei et al. (2017).

The widget only wires the GUI to a parameter node; the logic runs the engine
(BrainTumorCNNLib, beside this file, also usable without Slicer), a segmentation
or a comparison with a prior scan, in a child process of Slicer's own Python
(frontends/child.py), so Cancel stops it at once,
a crash of it leaves Slicer and the scene as they were, and torch's settings in
Slicer's process stay as they are.  PyTorch is imported only once a
segmentation is asked for, so the module loads in a Slicer without it and
offers to install it.
"""
import dataclasses
import importlib.util
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Dict, List, Optional, Tuple

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # BrainTumorCNNLib beside this file (a source checkout)
    sys.path.insert(0, _HERE)

from BrainTumorCNNLib.modalities import MODALITIES  # noqa: E402
from BrainTumorCNNLib.reading import volume_names  # noqa: E402
from BrainTumorCNNLib.running.postprocessing import CleanupConfig  # noqa: E402

#: What the engine needs beyond Slicer's own Python (numpy, scipy, SimpleITK), pinned as in pyproject.toml.
REQUIREMENTS = {"torch": "torch>=2.3,<2.14", "safetensors": "safetensors>=0.4"}
#: What the self-test needs beyond REQUIREMENTS (the phantom's brain template).
TEST_REQUIREMENTS = {"nilearn": "nilearn>=0.10"}
#: Parameter node field of each input sequence.
INPUT_FIELDS = dict(zip(MODALITIES, ("t1Volume", "t1cVolume", "t2Volume", "flairVolume")))


class BrainTumorCNN(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Brain Tumor CNN"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["BrainTumorCNN developers"]
        self.parent.helpText = """
Segments a brain tumor (necrotic and non-enhancing core, edema, enhancing tumor) in four MRI volumes: T1, T1
after contrast (T1c), T2 and FLAIR. Inputs are pre-selected from volume names (BraTS t1 / t1ce / t2 / flair,
t1n / t1c / t2w / t2f, ...). Volumes not on the T1c's grid are registered onto the T1c (or only resampled onto
its grid); the Preparation section says what will be done. Volumes that show the skull get their brain extracted
first (the deepbet package: slicer.util.pip_install('deepbet')). The result is a segmentation with one segment
per tissue, coded with standard terminology, on the T1c volume's grid, and the tumor volumes in millilitres.
For research use only, not for clinical decisions.
The README.md of the extension's source describes the models, their validation and the limitations.
"""
        self.parent.acknowledgementText = """
Networks (TwoPathCNN and its cascades) from M. Havaei, A. Davy, D. Warde-Farley, A. Biard, A. Courville,
Y. Bengio, C. Pal, P.-M. Jodoin, H. Larochelle: "Brain Tumor Segmentation with Deep Neural Networks",
Medical Image Analysis 35 (2017) 18-31. Models trained on BraTS challenge data.
"""


@parameterNodeWrapper
class BrainTumorCNNParameterNode:
    """The user's choices; saved with the scene."""

    t1Volume: vtkMRMLScalarVolumeNode
    t1cVolume: vtkMRMLScalarVolumeNode
    t2Volume: vtkMRMLScalarVolumeNode
    flairVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode  # None: a new segmentation node per run
    model: str = ""  # registry name; "" until a model with weights is known
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    precision: Annotated[str, Choice(["auto", "float32", "bfloat16"])] = "auto"  # inference.PRECISIONS
    cleanup: bool = True
    minimumVolumeMl: Annotated[float, WithinRange(0.0, 100.0)] = CleanupConfig.min_volume_ml
    removeFlat: bool = CleanupConfig.drop_flat
    largestOnly: bool = CleanupConfig.keep_largest_only
    removeDistant: bool = True  # the distance rule of the model's card (SegmentationOptions.model_cleanup)
    growEdema: bool = True  # the edema growth of the model's card (SegmentationOptions.edema_growth)
    probabilities: bool = False
    labelmap: bool = False
    uncertainty: bool = False  # add the uncertainty map (hidden until shown)
    register: bool = True  # register volumes not on the T1c grid onto the T1c
    resample: bool = True  # else resample them onto its grid as they lie
    keepPrepared: bool = False  # add the registered / resampled volumes to the scene
    brainExtraction: Annotated[str, Choice(["auto", "on", "off"])] = "auto"  # auto: when a skull is detected
    # a prior scan compared (scoring/longitudinal.py): its T1c and segmentation, and the current segmentation
    priorT1cVolume: vtkMRMLScalarVolumeNode
    priorSegmentation: vtkMRMLSegmentationNode
    currentSegmentation: vtkMRMLSegmentationNode  # set to each new result
    registerPrior: bool = True  # register the prior's T1c onto the current T1c (else: one frame already)
    comparisonFolder: str = ""  # where the comparison's files go (writing/comparison.py); Slicer's scene folder first


class BrainTumorCNNWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._task = None
        self._finishTask = None  # what shows the running task's result: finishSegmentation or showComparison
        self._uncertaintyNode = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/BrainTumorCNN.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = BrainTumorCNNLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.connect("timeout()", self.onPoll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelSelected)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.showUncertaintyCheckBox.connect("toggled(bool)", self.onShowUncertainty)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.comparisonFolderButton.connect("clicked(bool)", self.onChooseComparisonFolder)
        self.fillModelSelector()
        self.initializeParameterNode()

    def cleanup(self):
        if self._task:
            self._task.cancel()
        self._timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)

    def onSceneStartClose(self, caller, event):
        if self._task:
            self._task.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeAdded(self, caller, event, node):
        if node.IsA("vtkMRMLScalarVolumeNode"):
            qt.QTimer.singleShot(0, self.autoSelectInputs)  # once the loader has named the node

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        self.autoSelectInputs()
        if not self._parameterNode.model:
            self._parameterNode.model = self.logic.defaultModel()
        if not self._parameterNode.comparisonFolder:
            self._parameterNode.comparisonFolder = slicer.app.defaultScenePath

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
        self._parameterNode = parameterNode
        if self._parameterNode:
            # widgets with a SlicerParameterName property in the .ui follow the parameter node
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
        self.updateGui()

    def autoSelectInputs(self):
        """Fill empty input selectors from the volume names in the scene."""
        if self._parameterNode is None:
            return
        volumes = [n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                   if not n.IsA("vtkMRMLLabelMapVolumeNode")]
        byName = {n.GetName(): n for n in volumes}
        for modality, name in volume_names.assign(list(byName)).items():
            if getattr(self._parameterNode, INPUT_FIELDS[modality]) is None:
                setattr(self._parameterNode, INPUT_FIELDS[modality], byName[name])

    def fillModelSelector(self):
        """One entry per registry model with its validation Dice; models without weights cannot be chosen."""
        selector = self.ui.modelSelector
        wasBlocked = selector.blockSignals(True)
        selector.clear()
        if self.logic.missingPackages():
            self.ui.statusLabel.text = "PyTorch is not installed yet: Segment installs it first."
        else:
            for name, label, hasWeights in self.logic.modelChoices():
                selector.addItem(label, name)
                selector.model().item(selector.count - 1).setEnabled(hasWeights)
        selector.blockSignals(wasBlocked)

    def onModelSelected(self, index):
        if self._parameterNode and index >= 0:
            self._parameterNode.model = self.ui.modelSelector.itemData(index)

    def updateGui(self, caller=None, event=None):
        p = self._parameterNode
        selector = self.ui.modelSelector
        if p:
            wasBlocked = selector.blockSignals(True)
            selector.currentIndex = selector.findData(p.model)
            selector.blockSignals(wasBlocked)
        running = self._task is not None
        ready = bool(p and all(getattr(p, f) for f in INPUT_FIELDS.values())
                     and (p.model or self.logic.missingPackages()))
        self.ui.segmentButton.enabled = ready and not running
        self.ui.segmentButton.toolTip = ("Segment the tumor in the four input volumes." if ready else
                                         "Select the four input volumes and a model with weights.")
        self.ui.cancelButton.enabled = running
        self.ui.progressBar.visible = running
        self.ui.preparationLabel.text = self.logic.preparationPlan(p) if p else ""
        comparable = bool(p and p.t1cVolume and p.currentSegmentation and p.priorT1cVolume and p.priorSegmentation)
        self.ui.compareButton.enabled = comparable and not running
        self.ui.compareButton.toolTip = ("Compare the prior scan with the current one." if comparable else
                                         "Select the T1c (Inputs), its segmentation, the prior's T1c and its "
                                         "segmentation.")
        for section in (self.ui.inputsCollapsibleButton, self.ui.preparationCollapsibleButton,
                        self.ui.modelCollapsibleButton, self.ui.cleanupCollapsibleButton,
                        self.ui.outputsCollapsibleButton, self.ui.compareCollapsibleButton):
            section.enabled = not running

    def onSegment(self):
        self._task = None
        with slicer.util.tryWithErrorDisplay("Could not start the segmentation.", waitCursor=True):
            if self.logic.missingPackages():
                if not slicer.util.confirmOkCancelDisplay(
                        "BrainTumorCNN needs PyTorch and safetensors, which are not installed. Install them now? "
                        "This downloads about 1 GB and can take several minutes."):
                    return
                self.ui.statusLabel.text = "Installing PyTorch..."
                slicer.app.processEvents()
                self.logic.installPackages()
                self.fillModelSelector()
                self._parameterNode.model = self._parameterNode.model or self.logic.defaultModel()
            self.ui.volumesTable.setRowCount(0)
            self.ui.confidenceLabel.text = ""
            self._uncertaintyNode = None
            self.ui.showUncertaintyCheckBox.checked = False
            self.ui.showUncertaintyCheckBox.enabled = False
            self._task = self.logic.startSegmentation(self._parameterNode)
            self._finishTask = self.finishSegmentation
            self._timer.start()
        self.updateGui()

    def onShowUncertainty(self, shown):
        """The uncertainty map as the slice views' foreground layer, half transparent, or no foreground."""
        node = self._uncertaintyNode if shown else None
        if shown and node is None:
            return
        slicer.util.setSliceViewerLayers(foreground=node.GetID() if node else None,
                                         foregroundOpacity=0.5 if node else 0.0)

    def onChooseComparisonFolder(self):
        folder = qt.QFileDialog.getExistingDirectory(self.parent, "Save the comparison in",
                                                     self._parameterNode.comparisonFolder)
        if folder:
            self._parameterNode.comparisonFolder = folder

    def onCompare(self):
        """Compare the prior with the current scan in a child process (registration takes a while; Cancel stops
        it at once); asks first before replacing an earlier comparison's files."""
        self._task = None
        with slicer.util.tryWithErrorDisplay("Could not compare the scans.", waitCursor=True):
            existing = self.logic.existingComparisonFiles(self._parameterNode)
            if existing and not slicer.util.confirmOkCancelDisplay(
                    "The folder holds this comparison's files already:\n\n" + "\n".join(p.name for p in existing)
                    + "\n\nReplace them?", windowTitle="Brain Tumor CNN"):
                return
            self.ui.changesTable.setRowCount(0)
            self.ui.comparisonLabel.text = ""
            self._task = self.logic.startComparison(self._parameterNode, overwrite=bool(existing))
            self._finishTask = self.showComparison
            self._timer.start()
        self.updateGui()

    def showComparison(self, task):
        """The table of changes, what a change must exceed, the difference (new / resolved / unchanged tumor)
        as a segmentation over the current T1c, and where the files went."""
        difference = self.logic.addDifference(task, self._parameterNode)
        self.ui.changesTable.setRowCount(len(task.table))
        for row, values in enumerate(task.table):
            for column, key in enumerate(("measure", "then", "now", "change", "percent", "beyond")):
                self.ui.changesTable.setItem(row, column, qt.QTableWidgetItem(values[key]))
        self.ui.comparisonLabel.text = "\n".join(task.caveats)
        slicer.util.setSliceViewerLayers(background=self._parameterNode.t1cVolume)
        self.ui.statusLabel.text = f"Compared {task.prior} (prior) with {task.current}: the change is the " \
                                   f"segmentation {difference.GetName()!r}; the files are in {task.output}."

    def onCancel(self):
        if self._task:
            self._task.cancel()
            self.ui.statusLabel.text = "Cancelling..."

    def onPoll(self):
        task, finish = self._task, self._finishTask
        fraction, message = task.progress
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        if not task.finished:
            return
        self._timer.stop()
        self._task = self._finishTask = None
        self.updateGui()
        if task.cancelled or self._parameterNode is None:
            self.ui.statusLabel.text = "Cancelled; the scene is unchanged."
        elif task.error is not None:
            self.ui.statusLabel.text = f"Failed (the scene is unchanged): {task.error}"
            slicer.util.errorDisplay(f"The {task.WHAT} failed: {task.error}\n\nThe scene is unchanged.",
                                     detailedText=task.error.details)
        else:
            with slicer.util.tryWithErrorDisplay(f"Could not add the {task.WHAT} to the scene.", waitCursor=True):
                finish(task)

    def finishSegmentation(self, task):
        segmentation = self.logic.storeResult(task, self._parameterNode)
        self._parameterNode.currentSegmentation = segmentation  # what Compare compares by default
        self.showResult(segmentation, task)

    def showResult(self, segmentation, task):
        segmentation.CreateDefaultDisplayNodes()
        segmentation.CreateClosedSurfaceRepresentation()
        slicer.util.setSliceViewerLayers(background=self._parameterNode.t1cVolume, fit=True)
        volumes = self.logic.tumorVolumes(task)
        self.ui.volumesTable.setRowCount(len(volumes))
        for row, (region, millilitres) in enumerate(volumes.items()):
            self.ui.volumesTable.setItem(row, 0, qt.QTableWidgetItem(region))
            self.ui.volumesTable.setItem(row, 1, qt.QTableWidgetItem(f"{millilitres:.2f}"))
        self.ui.confidenceLabel.text = self.logic.confidenceText(task.result)
        from BrainTumorCNNLib.writing import mrml
        self._uncertaintyNode = segmentation.GetNodeReference(mrml.UNCERTAINTY_REFERENCE)
        self.ui.showUncertaintyCheckBox.enabled = self._uncertaintyNode is not None
        extraction = task.result.extraction
        notes = [str(note) for note in (extraction.summary() if extraction.extracted else None,
                                        task.result.cleanup_report) if note]
        self.ui.statusLabel.text = f"Segmented with {task.result.model_name}" + (
            f"; {'; '.join(notes)}" if notes else ".")
        if task.warnings:
            slicer.util.warningDisplay("Check the input volumes:\n\n" + "\n\n".join(task.warnings),
                                       windowTitle="Brain Tumor CNN")


class BrainTumorCNNLogic(ScriptedLoadableModuleLogic):
    """Segmentation of volume nodes; no GUI, so scripts and tests use it as the widget does."""

    def getParameterNode(self):
        return BrainTumorCNNParameterNode(super().getParameterNode())

    @staticmethod
    def missingPackages(requirements: Dict[str, str] = REQUIREMENTS) -> List[str]:
        """pip requirements of `requirements` whose module cannot be imported."""
        return [requirement for module, requirement in requirements.items() if importlib.util.find_spec(module) is None]

    def installPackages(self, requirements: Dict[str, str] = REQUIREMENTS) -> None:
        missing = self.missingPackages(requirements)
        if missing:
            slicer.util.pip_install(missing)

    @staticmethod
    def modelChoices() -> List[Tuple[str, str, bool]]:
        """(registry name, label, has weights) per model: the shipped ones best first, labelled with the Dice
        their cards report (as the web page lists them), then those without weights."""
        from BrainTumorCNNLib.network import registry
        try:
            ranked = registry.ranked()
        except FileNotFoundError:
            ranked = []
        return ([(spec.name, registry.card_label(spec), True) for spec in ranked]
                + [(name, f"{name} (no weights)", False) for name in registry.MODELS
                   if name not in {spec.name for spec in ranked}])

    def defaultModel(self) -> str:
        """The best shipped model, or "" when PyTorch or every model's weights are missing."""
        if self.missingPackages():
            return ""
        from BrainTumorCNNLib.network import registry
        try:
            return registry.default_model()
        except FileNotFoundError:
            return ""

    @staticmethod
    def options(parameters: BrainTumorCNNParameterNode):
        """The engine's options from the user's choices."""
        from BrainTumorCNNLib.running import pipeline
        cleanup = CleanupConfig(min_volume_ml=parameters.minimumVolumeMl, drop_flat=parameters.removeFlat,
                                keep_largest_only=parameters.largestOnly) if parameters.cleanup else None
        # probability volumes asked for: every slice run (screening leaves slices far from tumor background)
        return pipeline.SegmentationOptions(model=parameters.model or None, device=parameters.device,
                                            precision=parameters.precision, cleanup=cleanup,
                                            model_cleanup=parameters.removeDistant,
                                            edema_growth=parameters.growEdema,
                                            brain_extraction=parameters.brainExtraction,
                                            screen=not parameters.probabilities)

    @staticmethod
    def preparation(parameters: BrainTumorCNNParameterNode):
        """The preparation options from the user's choices."""
        from BrainTumorCNNLib.preparing.preparation import PreparationOptions
        return PreparationOptions(register=parameters.register, resample=parameters.resample)

    def preparationPlan(self, parameters: BrainTumorCNNParameterNode) -> str:
        """What will be done to the input volumes before segmenting, in words, or why it cannot start."""
        volumes = [getattr(parameters, f) for f in INPUT_FIELDS.values()]
        if any(v is None or v.GetImageData() is None for v in volumes):
            return "Select the four input volumes."
        from BrainTumorCNNLib.writing import mrml
        from BrainTumorCNNLib.preparing import preparation
        geometries = {m: mrml.geometry_of(v) for m, v in zip(MODALITIES, volumes)}
        names = {m: f"{m} ({v.GetName()})" for m, v in zip(MODALITIES, volumes)}
        try:
            return preparation.describe(preparation.plan(geometries, self.preparation(parameters), names))
        except ValueError as exc:
            return f"Cannot segment: {exc}"

    def process(self, t1, t1c, t2, flair, model: Optional[str] = None, options=None, output=None):
        """Segment four volume nodes on one grid (in a child process, as the widget does) and return the
        segmentation node: `output` refilled, or a new node on T1c's grid.  Blocks until done."""
        from BrainTumorCNNLib.writing import mrml
        from BrainTumorCNNLib.running import pipeline
        from BrainTumorCNNLib.frontends.child import SegmentationProcess
        options = options or pipeline.SegmentationOptions()
        if model is not None:
            options = dataclasses.replace(options, model=model)
        nodes = [t1, t1c, t2, flair]
        volumes, names = mrml.read_nodes(nodes)
        task = SegmentationProcess(volumes, options, names=names, inputs=mrml.inputs_of(nodes),
                                   interpreter=[self.childInterpreter()])
        task.wait()
        if task.error is not None:
            raise task.error
        for warning in task.warnings:
            logging.warning(warning)
        return mrml.store_result(t1c.GetScene(), task.result, task.geometry, f"{t1c.GetName()} tumor", output,
                                 reference_volume=t1c)

    @staticmethod
    def childInterpreter() -> str:
        """Slicer's own Python for the segmentation's child process: PythonSlicer (on Slicer's PATH, or in
        the application's folder)."""
        name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
        found = shutil.which(name) or os.path.join(slicer.app.applicationDirPath(), name)
        if not os.path.isfile(found):
            raise RuntimeError(f"{name}, Slicer's Python interpreter, was not found beside Slicer")
        return found

    def startSegmentation(self, parameters: BrainTumorCNNParameterNode):
        """Read the input volumes (main thread); prepare and segment them in a child process."""
        from BrainTumorCNNLib.writing import mrml
        from BrainTumorCNNLib.frontends.child import SegmentationProcess
        nodes = [getattr(parameters, f) for f in INPUT_FIELDS.values()]
        volumes, names = mrml.read_nodes(nodes)
        return SegmentationProcess(volumes, self.options(parameters), self.preparation(parameters), names,
                                   probabilities=parameters.probabilities, keep_prepared=parameters.keepPrepared,
                                   inputs=mrml.inputs_of(nodes), interpreter=[self.childInterpreter()],
                                   uncertainty=parameters.uncertainty)

    def storeResult(self, task, parameters: BrainTumorCNNParameterNode):
        """Put a finished task's result into the scene as the user chose (main thread); see mrml.store_result."""
        from BrainTumorCNNLib.writing import mrml
        name = f"{parameters.t1cVolume.GetName()} tumor"
        prepared = {}
        if parameters.keepPrepared:
            for step in task.prepared.steps:
                source = getattr(parameters, INPUT_FIELDS[step.sequence]).GetName()
                prepared[f"{source} on T1c grid"] = task.prepared.volumes[step.sequence]
        return mrml.store_result(slicer.mrmlScene, task.result, task.geometry, name, parameters.outputSegmentation,
                                 probabilities=parameters.probabilities, labelmap=parameters.labelmap,
                                 reference_volume=parameters.t1cVolume, prepared=prepared,
                                 uncertainty=parameters.uncertainty)

    @staticmethod
    def confidenceText(result) -> str:
        """The confidence figure in words, with the warning when the model is unsure (uncertainty.UNSURE)."""
        from BrainTumorCNNLib import labels
        from BrainTumorCNNLib.running import uncertainty
        text = "Confidence (the Dice the model expects of its labels): " + ", ".join(
            f"{labels.REGION_NAMES[region]} {value:.2f}" for region, value in result.confidence.items())
        return text + (f"\nWarning: {uncertainty.UNSURE}." if result.unsure else "")

    @staticmethod
    def existingComparisonFiles(parameters: BrainTumorCNNParameterNode) -> List[Path]:
        """The files of this comparison (prior and current by their T1c volumes' names) already in the folder."""
        from BrainTumorCNNLib.writing import comparison
        paths = comparison.comparison_paths(Path(parameters.comparisonFolder), parameters.priorT1cVolume.GetName(),
                                            parameters.t1cVolume.GetName())
        return [path for path in paths.values() if path.exists()]

    def startComparison(self, parameters: BrainTumorCNNParameterNode, overwrite: bool = False):
        """Read the prior (priorT1cVolume, priorSegmentation) and the current scan (t1cVolume,
        currentSegmentation) from the scene (main thread); compare them in a child process as `braintumorcnn
        compare` does, its files written into comparisonFolder.  Refuses to replace an earlier comparison's files
        unless `overwrite`."""
        from BrainTumorCNNLib.frontends.child import ComparisonProcess
        from BrainTumorCNNLib.writing import mrml_comparison
        if not parameters.comparisonFolder.strip():
            raise ValueError("Choose the folder to save the comparison in (Save in).")
        existing = self.existingComparisonFiles(parameters)
        if existing and not overwrite:
            raise FileExistsError(f"{parameters.comparisonFolder} holds this comparison already "
                                  f"({', '.join(p.name for p in existing)}); choose another folder or replace them")
        return ComparisonProcess(mrml_comparison.scan_of(parameters.priorT1cVolume, parameters.priorSegmentation),
                                 mrml_comparison.scan_of(parameters.t1cVolume, parameters.currentSegmentation),
                                 Path(parameters.comparisonFolder), register=parameters.registerPrior,
                                 interpreter=[self.childInterpreter()])

    @staticmethod
    def addDifference(task, parameters: BrainTumorCNNParameterNode):
        """A finished comparison's difference as a segmentation of new / resolved / unchanged tumor over the
        current T1c (main thread)."""
        from BrainTumorCNNLib.writing import mrml, mrml_comparison
        volume = parameters.t1cVolume
        return mrml_comparison.add_difference_node(volume.GetScene(), task.difference, mrml.geometry_of(volume),
                                                   f"{volume.GetName()} change since prior")

    def compareWithPrior(self, parameters: BrainTumorCNNParameterNode, overwrite: bool = False):
        """startComparison, waited for (for scripts): returns the finished comparison (its table, caveats and
        files) and the difference's segmentation node."""
        task = self.startComparison(parameters, overwrite)
        task.wait()
        if task.error is not None:
            raise task.error
        return task, self.addDifference(task, parameters)

    @staticmethod
    def tumorVolumes(task) -> Dict[str, float]:
        from BrainTumorCNNLib.writing import mrml
        return mrml.tumor_volumes_ml(task.result.labels, task.geometry, task.result.num_classes)


class BrainTumorCNNTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: a small synthetic case (phantom) through the logic."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_inputs_selected_by_name_and_segmented()
        self.setUp()
        self.test_cancel_leaves_the_scene_unchanged()
        self.setUp()
        self.test_prior_compared_and_its_files_kept()

    def _phantomVolumes(self):
        logic = BrainTumorCNNLogic()
        logic.installPackages({**REQUIREMENTS, **TEST_REQUIREMENTS})
        from BrainTumorCNNLib.synthetic import phantom
        from BrainTumorCNNLib.writing import mrml
        self.delayDisplay("Building a small phantom case")
        case = phantom.make_phantom(0, "small")
        return logic, [mrml.add_volume_node(slicer.mrmlScene, image, case.geometry,
                                            f"{case.name}_{phantom.FILE_SUFFIXES[modality]}")
                       for modality, image in zip(MODALITIES, case.images)]

    def test_inputs_selected_by_name_and_segmented(self):
        logic, volumes = self._phantomVolumes()
        names = volume_names.assign([v.GetName() for v in volumes])
        self.assertEqual(names, {m: v.GetName() for m, v in zip(MODALITIES, volumes)})

        model = logic.defaultModel()
        if not model:
            self.delayDisplay("No trained weights shipped: segmentation not tested")
            return
        from BrainTumorCNNLib import labels
        from BrainTumorCNNLib.network import registry
        segmentation = logic.process(*volumes, model=model)
        tissues = labels.class_tissues(registry.get(model).card()["num_classes"])
        segments = segmentation.GetSegmentation()
        self.assertEqual([segments.GetNthSegment(i).GetName() for i in range(segments.GetNumberOfSegments())],
                         [t.name for t in tissues])

        # the widget's path (worker thread) refills a chosen output and adds the optional volumes
        parameters = logic.getParameterNode()
        for field, volume in zip(INPUT_FIELDS.values(), volumes):
            setattr(parameters, field, volume)
        parameters.model, parameters.outputSegmentation = model, segmentation
        parameters.probabilities = parameters.labelmap = True
        task = logic.startSegmentation(parameters)
        task.wait()
        self.assertIsNone(task.error)
        self.assertEqual(logic.storeResult(task, parameters).GetID(), segmentation.GetID())
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLSegmentationNode")), 1)
        self.assertEqual(len(slicer.util.getNodes("* probability")), len(tissues))
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLLabelMapVolumeNode")), 1)
        self.assertGreater(logic.tumorVolumes(task)["complete tumor"], 0.0)
        self.delayDisplay("Segmentation test passed")

    def test_cancel_leaves_the_scene_unchanged(self):
        logic, volumes = self._phantomVolumes()
        parameters = logic.getParameterNode()
        for field, volume in zip(INPUT_FIELDS.values(), volumes):
            setattr(parameters, field, volume)
        parameters.model = logic.defaultModel()
        if not parameters.model:
            self.delayDisplay("No trained weights shipped: cancellation not tested")
            return
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        task = logic.startSegmentation(parameters)
        task.cancel()
        started = time.time()
        task.wait(timeout=600)
        self.assertTrue(task.finished, f"not cancelled after {time.time() - started:.0f} s")
        self.assertTrue(task.cancelled, f"task ended with {task.error!r} instead of being cancelled")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
        self.delayDisplay("Cancellation test passed")

    def test_prior_compared_and_its_files_kept(self):
        """The phantom's truth shrunk by a 2-voxel shell as the prior, its truth as the current scan (one frame):
        the comparison finds the growth, writes its files, and asks before replacing them."""
        import tempfile
        import numpy as np
        from scipy import ndimage
        from BrainTumorCNNLib.synthetic import phantom
        from BrainTumorCNNLib.writing import mrml
        logic = BrainTumorCNNLogic()
        case = phantom.make_phantom(0, "small")
        t1c = case.images[MODALITIES.index("T1c")]
        tumor = case.truth > 0
        prior = np.where(ndimage.binary_erosion(tumor, iterations=2), case.truth, 0)
        parameters = logic.getParameterNode()
        parameters.priorT1cVolume = mrml.add_volume_node(slicer.mrmlScene, t1c, case.geometry, "Prior T1c")
        parameters.t1cVolume = mrml.add_volume_node(slicer.mrmlScene, t1c, case.geometry, "Current T1c")
        parameters.priorSegmentation = mrml.add_segmentation_node(slicer.mrmlScene, prior, case.geometry, 4, "Prior")
        parameters.currentSegmentation = mrml.add_segmentation_node(slicer.mrmlScene, case.truth, case.geometry, 4,
                                                                    "Current")
        parameters.registerPrior = False
        with tempfile.TemporaryDirectory() as folder:
            parameters.comparisonFolder = folder
            task, difference = logic.compareWithPrior(parameters)
            self.assertEqual(task.table[0]["beyond"], "yes")
            self.assertGreater(float(task.table[0]["change"]), 0.0)
            self.assertTrue(all(path.is_file() for path in task.paths.values()))
            self.assertEqual(difference.GetSegmentation().GetNumberOfSegments(), 3)
            with self.assertRaises(FileExistsError):
                logic.startComparison(parameters)
        self.delayDisplay("Comparison test passed")
