"""Lightning tasks: SemanticSegmentationTask, ClassificationTask, PixelwiseRegressionTask, EmbeddingTask."""

from terramind_ft.tasks.base import BaseTask
from terramind_ft.tasks.classification import ClassificationTask
from terramind_ft.tasks.embedding import EmbeddingTask
from terramind_ft.tasks.regression import PixelwiseRegressionTask
from terramind_ft.tasks.segmentation import SemanticSegmentationTask

__all__ = ["BaseTask", "ClassificationTask", "EmbeddingTask", "PixelwiseRegressionTask", "SemanticSegmentationTask"]
