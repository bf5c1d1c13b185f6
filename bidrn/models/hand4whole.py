"""The whole-body network: Hand4Whole's pipeline, each encoder full precision, baseline-binarized or BiDRN."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from bidrn.models import ops
from bidrn.models.config import ModelConfig
from bidrn.models.heads import BodyRotationNet, BoxNet, FaceRegressor, HandRotationNet, PositionNet
from bidrn.models.resnet import ResNetEncoder

BODY_JOINTS = 25
HAND_JOINTS = 20
HAND_MCP = (4, 8, 12, 16)  # index, middle, ring, pinky MCP within the 20 hand joints
HAND_POSE_JOINTS = 15
BODY_POSE_JOINTS = 21


class WholeBodyNet(nn.Module):
    """Image B x 3 x H x W (RGB, normalised to [0, 1]) -> SMPL-X parameters, joints and boxes.

    Pipeline (Hand4Whole): body encoder on the image resized to body_input -> PositionNet (3D joint heatmaps) ->
    BoxNet (hand/face boxes) -> RoIAlign crops of the full image -> hand encoder (left hand flipped, both hands
    in one batch) and face encoder -> rotation heads. Poses come out as axis-angle. With a body model attached
    (``attach_body_model``) the output also holds the SMPL-X mesh and joints (root-relative) and their
    projection into body-input pixels.
    """

    def __init__(self, cfg: ModelConfig, body_model: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.body_backbone = ResNetEncoder(cfg.body)
        self.hand_backbone = ResNetEncoder(cfg.hand)
        self.face_backbone = ResNetEncoder(cfg.face)
        c_body, c_hand, c_face = (e.out_channels for e in (self.body_backbone, self.hand_backbone, self.face_backbone))
        d = cfg.heatmap_depth
        self.body_position_net = PositionNet(c_body, BODY_JOINTS, d)
        self.box_net = BoxNet(c_body, BODY_JOINTS * d, cfg.boxnet_width, binary=cfg.boxnet == "binary",
                              declared_in_ch=cfg.boxnet_in_channels)
        self.hand_position_net = PositionNet(c_hand, HAND_JOINTS, d)
        self.hand_rotation_net = HandRotationNet(c_hand, HAND_JOINTS, cfg.rot_feat_channels, HAND_POSE_JOINTS)
        self.body_rotation_net = BodyRotationNet(c_body, c_hand, BODY_JOINTS, len(HAND_MCP), cfg.rot_feat_channels,
                                                 body_joints=BODY_POSE_JOINTS)
        self.face_regressor = FaceRegressor(c_face)
        self.body_model = body_model

    def attach_body_model(self, body_model: nn.Module | None) -> "WholeBodyNet":
        """Attach an SMPL-X layer (bidrn.body.load_body_model()); forward then also returns the mesh."""
        self.body_model = body_model
        return self

    def network_state_dict(self) -> dict[str, torch.Tensor]:
        """The network's own weights and BN statistics, without an attached body model's (large) buffers."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("body_model.")}

    def load_network_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load weights saved by :meth:`network_state_dict`; any missing or unexpected key is an error."""
        result = self.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("body_model.")]
        if missing or result.unexpected_keys:
            raise ValueError(f"weights do not fit {self.cfg.name!r}: missing {missing[:5]}"
                             f"{'...' if len(missing) > 5 else ''}, unexpected {result.unexpected_keys[:5]}")

    def check_input(self, img: torch.Tensor) -> None:
        h, w = self.cfg.input_size
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor image of shape B x 3 x {h} x {w}, got {type(img).__name__}")
        if not img.is_floating_point():
            raise TypeError(f"expected a floating-point image (RGB in [0, 1]), got dtype {img.dtype}")
        if img.dim() != 4 or img.shape[1] != 3 or tuple(img.shape[2:]) != (h, w):
            raise ValueError(f"expected an image tensor of shape B x 3 x {h} x {w} (RGB, {self.cfg.name}), "
                             f"got {tuple(img.shape)}")

    def camera_translation(self, cam_param: torch.Tensor) -> torch.Tensor:
        """B x 3 -> B x 3: (t_x, t_y) as regressed, t_z = k * sigmoid(c) with k = sqrt(fx fy s^2 / (H W))."""
        (fx, fy), (h, w) = self.cfg.focal, self.cfg.body_input
        k = math.sqrt(fx * fy * self.cfg.camera_3d_size ** 2 / (h * w))
        return torch.cat((cam_param[:, :2], k * torch.sigmoid(cam_param[:, 2:])), dim=1)

    # The RoIAlign the crops use; the ExecuTorch exporter swaps in its bidrn::roi_align op (same semantics).
    crop_op = staticmethod(ops.roi_align)
    # The body-input resize; the exporter swaps in mobile_export.ops.resize (the same pixels, faster there).
    resize_op = staticmethod(F.interpolate)

    def _crop(self, img, box_body_px, size, mirror: bool = False):
        """Crop body-input-pixel boxes (B x 4) from the full image with RoIAlign -> B x 3 x size (mirrored
        left-right when asked)."""
        (h, w), (bh, bw) = self.cfg.input_size, self.cfg.body_input
        scale = box_body_px.new_tensor((w / bw, h / bh, w / bw, h / bh))
        return self.crop_op(img, box_body_px * scale, size, sampling_ratio=self.cfg.roi_sampling_ratio,
                            mirror=mirror)

    def forward(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_input(img)
        cfg, b = self.cfg, img.shape[0]
        body_img = self.resize_op(img, size=cfg.body_input, mode=cfg.body_resize)
        body_feat = self.body_backbone(body_img)
        body_hm, body_joint_img = self.body_position_net(body_feat)

        centers, sizes = self.box_net(body_feat, body_hm.detach())
        hm_shape = tuple(body_feat.shape[2:])
        hand_ar = cfg.hand_input[1] / cfg.hand_input[0]
        face_ar = cfg.face_input[1] / cfg.face_input[0]
        boxes = [ops.restore_bbox(centers[:, i], sizes[:, i], ar, ext, hm_shape, cfg.body_input).detach()
                 for i, (ar, ext) in enumerate(((hand_ar, 2.0), (hand_ar, 2.0), (face_ar, 1.5)))]
        lhand_bbox, rhand_bbox, face_bbox = boxes

        # Both hands go through one (right-hand) network; the left crop is mirrored in and out.
        hand_img = torch.cat((self._crop(img, lhand_bbox, cfg.hand_input, mirror=True),
                              self._crop(img, rhand_bbox, cfg.hand_input)))
        hand_feat = self.hand_backbone(hand_img)
        _, hand_joint_img = self.hand_position_net(hand_feat)
        hand_pose = ops.rot6d_to_axis_angle(self.hand_rotation_net(hand_feat, hand_joint_img.detach()).view(-1, 6))
        hand_pose = hand_pose.view(2 * b, HAND_POSE_JOINTS, 3)
        lhand_joint_img = ops.flip_x(hand_joint_img[:b], hand_feat.shape[3])
        rhand_joint_img = hand_joint_img[b:]
        lhand_pose = ops.flip_axis_angle(hand_pose[:b]).flatten(1)
        rhand_pose = hand_pose[b:].flatten(1)
        mcp = list(HAND_MCP)
        root6d, body6d, betas, cam_param = self.body_rotation_net(
            body_feat, body_joint_img.detach(), hand_feat[:b], lhand_joint_img[:, mcp].detach(),
            hand_feat[b:], rhand_joint_img[:, mcp].detach(), lhand_feat_mcp=hand_joint_img[:b, mcp].detach())
        root_pose = ops.rot6d_to_axis_angle(root6d)
        body_pose = ops.rot6d_to_axis_angle(body6d.view(-1, 6)).view(b, BODY_POSE_JOINTS * 3)

        face_feat = self.face_backbone(self._crop(img, face_bbox, cfg.face_input))
        expression, jaw6d = self.face_regressor(face_feat)
        jaw_pose = ops.rot6d_to_axis_angle(jaw6d)

        out = {
            "root_pose": root_pose, "body_pose": body_pose, "lhand_pose": lhand_pose, "rhand_pose": rhand_pose,
            "jaw_pose": jaw_pose, "betas": betas, "expression": expression,
            "cam_param": cam_param, "cam_trans": self.camera_translation(cam_param),
            "body_joint_img": body_joint_img, "lhand_joint_img": lhand_joint_img, "rhand_joint_img": rhand_joint_img,
            "box_centers": centers, "box_sizes": sizes,
            "lhand_bbox": lhand_bbox, "rhand_bbox": rhand_bbox, "face_bbox": face_bbox,
        }
        if self.body_model is not None:
            out.update(self.mesh(out))
        return out

    def mesh(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """SMPL-X forward on predicted parameters -> root-relative vertices/joints and 2D joint projections."""
        smplx_out = self.body_model(
            betas=params["betas"], global_orient=params["root_pose"], body_pose=params["body_pose"],
            left_hand_pose=params["lhand_pose"], right_hand_pose=params["rhand_pose"], jaw_pose=params["jaw_pose"],
            expression=params["expression"])
        joints, vertices = smplx_out.joints, smplx_out.vertices
        cam = params["cam_trans"][:, None, :]
        (fx, fy), (h, w) = self.cfg.focal, self.cfg.body_input
        xyz = joints + cam
        z = xyz[..., 2].clamp(min=1e-4)
        proj = torch.stack((xyz[..., 0] / z * fx + w / 2, xyz[..., 1] / z * fy + h / 2), dim=-1)
        root = joints[:, :1]
        return {"vertices": vertices - root, "joints": joints - root, "joint_proj": proj}
