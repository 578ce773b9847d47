"""``generate`` stage: subject groups (anchor, bg, pose + masks) from procedural subjects, packaged and
folder photos or a diffusion model (``sources``), segmented (``segment``), posed (``pose``) and composited
onto backgrounds (``background``). The stage is ``run``; ``reference`` generates images of a photo's subject
with the trained adapter."""
