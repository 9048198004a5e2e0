"""Recording from other people's training loops: callbacks for PyTorch Lightning and Hugging Face ``transformers``.

``trajkit.integrations.lightning.TrajkitCallback`` (extra ``trajkit[lightning]``) and
``trajkit.integrations.transformers.TrajkitCallback`` (extra ``trajkit[transformers]``) record the loss, the
learning rate and the scheduled snapshots of a ``Trainer``'s run through :class:`trajkit.Recorder`, handing it
the trainer's optimiser so snapshot copies overlap training. Importing this package imports neither library;
each submodule imports its own and, where it is missing, raises one line naming the extra to install.
"""
