"""Hand4Whole's heads (Moon et al. 2022), with BiDRN's Binarized BoxNet (Sec. 3.2) as an option.

Coordinates: joint_img is (x, y, z) in heatmap cells of the encoder's output grid (x in [0, W), y in [0, H),
z in [0, D)); box centers/sizes are in body-heatmap cells too.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bidrn.models import ops
from bidrn.nn.layers import BinaryConvTranspose2d, BinaryLinear


def global_mean(feat: torch.Tensor) -> torch.Tensor:
    """B x C x H x W -> B x C, the mean over the plane. Kept 4-D until the flatten: ExecuTorch's XNNPACK
    partitioner takes a mean over the last two dims only with keepdim (a global average pool; 0.25 -> 0.08
    ms for 2048 x 8 x 6 on one thread), and leaves the 2-D form to the portable kernel."""
    return feat.mean(dim=(2, 3), keepdim=True).flatten(1)


def conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.BatchNorm2d(out_ch), nn.ReLU())


class PositionNet(nn.Module):
    """1x1 conv C -> J*D, 3D soft-argmax (integral regression, Sun et al. 2018).

    Returns the softmax heatmap (B x J x D x H x W, BoxNet's input) and joint_img (B x J x 3).
    """

    def __init__(self, in_ch: int, joint_num: int, depth: int):
        super().__init__()
        self.joint_num, self.depth = joint_num, depth
        self.conv = nn.Conv2d(in_ch, joint_num * depth, 1)

    def forward(self, feat):
        b, _, h, w = feat.shape
        logits = self.conv(feat).view(b, self.joint_num, self.depth, h, w)
        # One softmax for both: the heatmap and the soft-argmax's probabilities (ops.soft_argmax_3d's).
        prob = torch.softmax(logits.flatten(2), dim=2)
        joint_img = ops.expected_coords(prob, (self.depth, h, w))
        return prob.view_as(logits), joint_img


class BoxNet(nn.Module):
    """Hand and face boxes from the body feature and its joint heatmap.

    concat(F, heatmap as J*D channels) -> 3 x [deconv k4 s2 p1 + BN + ReLU] -> 1x1 conv -> 2D soft-argmax (3
    centers: left hand, right hand, face); the last feature sampled at each (detached) center -> MLP -> size.

    Binarized (Sec. 3.2): deconv1, deconv2 and each MLP's first Linear are binary; deconv3, the center conv and
    the last Linears stay full precision. No ReLU may feed a binary layer (sign would be constant +1), so the
    binarized variant puts an affine BN on the concat (the softmax channels are >= 0), leaves out the ReLU after
    deconv1 (the next sign() with eq. 2's gradient already acts as Hardtanh + sign) and after deconv3 (its output
    feeds the binary Linears).
    """

    def __init__(self, in_ch: int, hm_ch: int, width: int = 256, binary: bool = False,
                 declared_in_ch: int | None = None):
        super().__init__()
        self.binary = binary
        cat_ch = declared_in_ch or in_ch + hm_ch
        if cat_ch < in_ch + hm_ch:
            raise ValueError(f"BoxNet input width {cat_ch} is below feature + heatmap channels {in_ch + hm_ch}")
        self.pad_channels = cat_ch - in_ch - hm_ch
        deconv = BinaryConvTranspose2d if binary else nn.ConvTranspose2d
        linear = BinaryLinear if binary else nn.Linear
        self.input_norm = nn.BatchNorm2d(cat_ch) if binary else nn.Identity()
        self.deconv = nn.Sequential(
            deconv(cat_ch, width, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.Identity() if binary else nn.ReLU(),
            deconv(width, width, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.Identity() if binary else nn.ReLU(),
        )
        # Zero-padded input channels multiply zeros: the cost counter leaves them out of the MACs.
        self.deconv[0].counted_in_channels = in_ch + hm_ch
        self.center = nn.Conv2d(width, 3, 1)
        self.sizes = nn.ModuleList(
            nn.Sequential(linear(width, width), nn.ReLU(), nn.Linear(width, 2)) for _ in range(3)
        )
        self.upsample = 8  # three stride-2 deconvs

    # The bilinear point lookup (the exporter swaps in its own op, bidrn::sample_points, as for the crops).
    sample_op = staticmethod(ops.sample_joint_features)

    def forward(self, feat, heatmap):
        """feat B x C x H x W, heatmap B x J x D x H x W -> centers, sizes: B x 3 x 2 (body-heatmap cells)."""
        x = torch.cat((feat, heatmap.flatten(1, 2)), dim=1)
        if self.pad_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad_channels))
        x = self.deconv(self.input_norm(x))
        centers = ops.soft_argmax_2d(self.center(x))  # B x 3 x 2, cells of the upsampled grid
        sampled = self.sample_op(x, centers.detach())  # B x 3 x width
        sizes = torch.stack([mlp(sampled[:, i]) for i, mlp in enumerate(self.sizes)], dim=1)
        return centers / self.upsample, sizes


class HandRotationNet(nn.Module):
    """Hand pose: 1x1 conv + BN + ReLU, features sampled at the J hand joints ++ (x, y, z) -> Linear -> 15 x 6D."""

    sample_op = staticmethod(ops.sample_joint_features)  # as BoxNet's

    def __init__(self, in_ch: int, joint_num: int = 20, feat_ch: int = 512, pose_joints: int = 15):
        super().__init__()
        self.conv = conv_bn_relu(in_ch, feat_ch)
        self.pose_out = nn.Linear(joint_num * (feat_ch + 3), pose_joints * 6)

    def forward(self, feat, joint_img):  # B x C x H x W, B x J x 3 -> B x 90
        sampled = self.sample_op(self.conv(feat), joint_img[:, :, :2])
        return self.pose_out(torch.cat((sampled, joint_img), dim=2).flatten(1))


class BodyRotationNet(nn.Module):
    """Body pose, shape and camera (Hand4Whole's body RotationNet with hand MCP features).

    Shape (10) and camera (3) from the pooled body feature; root (6D) and 21 body joints (6D) from features
    sampled at the 25 body joints (body feature) and the 4 MCP joints of each hand (hand features) ++ coords.
    """

    sample_op = staticmethod(ops.sample_joint_features)  # as BoxNet's

    def __init__(self, in_ch: int, hand_ch: int, joint_num: int = 25, mcp_num: int = 4, feat_ch: int = 512,
                 shape_dim: int = 10, body_joints: int = 21):
        super().__init__()
        self.shape_out = nn.Linear(in_ch, shape_dim)
        self.cam_out = nn.Linear(in_ch, 3)
        self.body_conv = conv_bn_relu(in_ch, feat_ch)
        self.lhand_conv = conv_bn_relu(hand_ch, feat_ch)
        self.rhand_conv = conv_bn_relu(hand_ch, feat_ch)
        flat = (joint_num + 2 * mcp_num) * (feat_ch + 3)
        self.root_pose_out = nn.Linear(flat, 6)
        self.body_pose_out = nn.Linear(flat, body_joints * 6)

    def forward(self, body_feat, body_joint_img, lhand_feat, lhand_mcp, rhand_feat, rhand_mcp,
                lhand_feat_mcp=None):
        """lhand_feat_mcp: where to sample lhand_feat when it is not in lhand_mcp's frame. Hand4Whole runs the
        left hand mirrored; sampling its feature map unmirrored at the unmirrored joints reads the same values
        as mirroring the map and sampling at the mirrored joints (bilinear sampling commutes with the
        mirror), without moving the map."""
        pooled = global_mean(body_feat)
        parts = []
        for conv, f, j, at in ((self.body_conv, body_feat, body_joint_img, body_joint_img),
                               (self.lhand_conv, lhand_feat, lhand_mcp,
                                lhand_mcp if lhand_feat_mcp is None else lhand_feat_mcp),
                               (self.rhand_conv, rhand_feat, rhand_mcp, rhand_mcp)):
            parts.append(torch.cat((self.sample_op(conv(f), at[:, :, :2]), j), dim=2))
        flat = torch.cat(parts, dim=1).flatten(1)
        return self.root_pose_out(flat), self.body_pose_out(flat), self.shape_out(pooled), self.cam_out(pooled)


class FaceRegressor(nn.Module):
    """Expression (10) and jaw pose (6D) from the pooled face feature."""

    def __init__(self, in_ch: int, expr_dim: int = 10):
        super().__init__()
        self.expr_out = nn.Linear(in_ch, expr_dim)
        self.jaw_out = nn.Linear(in_ch, 6)

    def forward(self, feat):  # B x C x H x W -> B x 10, B x 6
        pooled = global_mean(feat)
        return self.expr_out(pooled), self.jaw_out(pooled)
