"""The mask decoder of class masks: SAM's decoder with one mask token per class, or SAM's own box-to-mask."""

from __future__ import annotations

import copy
import logging

import torch
from segment_anything.modeling import MaskDecoder
from torch import nn

logger = logging.getLogger(__name__)


class ClassMaskDecoder(nn.Module):
    """SAM's mask decoder giving ``num_classes`` logit maps, in one of two modes.

    - Class masks (``sam_mask_output`` False; prompt-free semantic segmentation): ``num_classes``
      mask tokens and hypernetwork heads. Initialisation (deliberate, not a partial strict load):
      every class starts from SAM's single-mask output (mask token 0 and its hypernetwork MLP). All
      classes then give the same logits, the softmax starts uniform and unsaturated, and the targets
      break the symmetry from the first step. (Starting class c from SAM's token c mod 4 gives
      logits of very different scales that saturate the softmax; measured on the phantoms it
      learned markedly slower.)
    - SAM's own mask (``sam_mask_output`` True; 2 classes, a prompted object): SAM's four mask
      tokens in the sequence as SAM has them (the tokens attend to each other, so two copies of
      token 0 would not give SAM's mask) and its single-mask head (token 0's MLP); the object logit
      is SAM's ``multimask_output=False`` mask and the background logit is fixed at 0, so
      ``softmax([0, l]) = sigmoid(l)``: untrained, the network is SAM's box-to-mask model.

    Args:
        sam_decoder: the backbone's SAM mask decoder (its transformer is shared, not copied).
        num_classes: C, background included.
        sam_mask_output: the second mode (2 classes).

    The IoU token stays in the token sequence (it takes part in attention); SAM's IoU prediction
    head is dropped, since semantic training has no use for it and DDP would see it unused.
    """

    def __init__(self, sam_decoder: MaskDecoder, num_classes: int, sam_mask_output: bool = False):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        if sam_mask_output and num_classes != 2:
            raise ValueError(f"SAM's own mask output makes a 2-class network (background, object), not {num_classes}")
        self.num_classes = num_classes
        self.sam_mask_output = sam_mask_output
        self.transformer_dim = sam_decoder.transformer_dim
        self.transformer = sam_decoder.transformer
        self.iou_token = sam_decoder.iou_token
        self.output_upscaling = sam_decoder.output_upscaling
        if sam_mask_output:
            self.mask_tokens = copy.deepcopy(sam_decoder.mask_tokens)
            heads = 1
            logger.info("new: SAM's %d mask tokens and its single-mask head; background logit fixed at 0",
                        self.mask_tokens.num_embeddings)
        else:
            self.mask_tokens = nn.Embedding(num_classes, self.transformer_dim)
            with torch.no_grad():
                self.mask_tokens.weight.copy_(sam_decoder.mask_tokens.weight[0].expand(num_classes, -1))
            heads = num_classes
            logger.info("new: %d class mask tokens and hypernetwork heads, each a copy of SAM's mask token 0 and "
                        "its head; SAM's IoU head dropped", num_classes)
        self.output_hypernetworks_mlps = nn.ModuleList(
            copy.deepcopy(sam_decoder.output_hypernetworks_mlps[0]) for _ in range(heads)
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> torch.Tensor:
        """Predict one logit map per class.

        Args:
            image_embeddings: float[B, D, h, w] from the image encoder.
            image_pe: float[1 or B, D, h, w] positional encoding of the embedding grid.
            sparse_prompt_embeddings: float[B, N, D] (N = 0 without prompts).
            dense_prompt_embeddings: float[B, D, h, w].

        Returns:
            logits: float[B, C, 4h, 4w].
        """
        batch, dim, height, width = image_embeddings.shape
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse_prompt_embeddings], dim=1)
        src = image_embeddings + dense_prompt_embeddings
        pos = image_pe.expand(batch, -1, -1, -1)
        hidden, src = self.transformer(src, pos, tokens)
        heads = len(self.output_hypernetworks_mlps)
        mask_tokens_out = hidden[:, 1 : 1 + heads]
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(batch, dim, height, width))
        hyper = torch.stack([mlp(mask_tokens_out[:, c]) for c, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        b, c, h, w = upscaled.shape
        masks = (hyper @ upscaled.flatten(2)).view(b, heads, h, w)
        if self.sam_mask_output:
            masks = torch.cat([torch.zeros_like(masks), masks], dim=1)
        return masks
