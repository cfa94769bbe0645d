"""Training the demo checkpoint's two autoencoders on the demo world: a tiny Wan video VAE and a tiny DAC audio VAE.

    python -m train vae video --out runs/vae_video --device cuda       # train/vae_configs/demo_video.yaml
    python -m train vae audio --out runs/vae_audio --device cuda       # train/vae_configs/demo_audio.yaml
    python -m train vae video --out DIR --config my.yaml --steps 500 --batch 16 --set optim.lr=5e-4 [--resume]
    python -m train vae audio --out DIR --max-minutes 5    # the LR schedule completes within 5 minutes

Tiny CPU configs for smoke runs: ``--config train/vae_configs/tiny_video.yaml`` (or ``tiny_audio.yaml``).

Clips are generated on the fly from deterministic seeds (``clip_seed(data.seed, i, "train")``) into a pool held on
the training device, in worker processes, once; each step draws random crops from it (video: a random window of
``crop_frames`` = 4k+1 frames, a random square of ``crop_size`` pixels, a random horizontal flip; audio: a random
``crop_samples`` window at any sample offset). ``data.path`` reads a ``generate_dataset`` folder instead.

Losses (no GAN, no perceptual network):
    video: Charbonnier(x̂, x) + gradient · L1(∇x̂ − ∇x) over W, H and T + kl · mean KL(q(z|x) ‖ N(0, I))
    audio: stft · Σ_n [SC_n + L1(log|X̂_n| − log|X_n|)] / #n + waveform · L1(x̂, x) + kl · mean KL

A run folder holds ``metrics.jsonl`` (one row per logged step), ``state.pt`` (resumable: model, optimizer, step,
RNG states), the export in the official layout (``video_vae/`` written by diffusers ``save_pretrained``;
``audio_vae/`` by :func:`mova.loading.save_native`) and ``eval.json`` (held-out reconstruction metrics, parameter
count, file sizes, latent statistics).

Latent statistics: MOVA's pipeline normalises video latents with ``latents_mean`` / ``latents_std`` from the video
VAE config (docs/model.md#image-conditioning), so these are measured here (per channel, posterior mode of ``data.stats_clips`` training
clips) and written into the exported config. Audio latents are used unnormalised (docs/model.md#audio-latents), so the export folds
the same per-channel standardisation into ``quant_conv`` (mean rows) and ``post_quant_conv`` (exactly inverse):
the exported DAC encodes to zero-mean, unit-variance latents and reconstructs the same waveform.

Modules by job: :mod:`.configuration` (the run config), :mod:`.clips` (data), :mod:`.losses` (losses and metrics),
:mod:`.autoencoders` (build, latent statistics, export, evaluation), :mod:`.loop` (training loop, command line). A
run shares the trainer's LR schedule (``train.schedule``) and metrics writer (``train.metrics``); its checkpoint is
one ``state.pt`` (whole model, optimizer, data generator, RNG states of the one device it runs on).
"""
