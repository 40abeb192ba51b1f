"""MLflow pyfunc model defined by code (MLflow "models from code"): no pickle.

``mlflow.pyfunc.load_model("models:/<name>@champion").predict(df)`` applies the
same preprocessor as training and serving.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pyarrow as pa
from mlflow.pyfunc import PythonModel


class RaypipeModel(PythonModel):
    def load_context(self, context) -> None:
        from raypipe.model import Bundle

        self.bundle = Bundle.load(Path(context.artifacts["bundle"]))

    def predict(self, context, model_input, params=None):
        from raypipe.model import format_predictions

        table = pa.Table.from_pandas(model_input, preserve_index=False)
        scores = self.bundle.predict_table(table)
        return format_predictions(self.bundle.preprocessor.label, scores)["prediction"]


mlflow.models.set_model(RaypipeModel())
