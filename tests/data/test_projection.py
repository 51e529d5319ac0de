"""pcseg.data.projection: the pixel convention (centres at integers, floor(x + 0.5)) and the two camera
descriptions (KITTI P2/Tr and K/c2w) against projections computed by hand."""
import numpy as np
import torch

from pcseg.data.projection import generate_rays, look_at, pixel_index, project, project_points


def test_pixel_index_puts_half_pixels_to_the_right_for_every_pixel_alike():
    # pixel c covers [c - 0.5, c + 0.5): -0.5 → 0, 0.49 → 0, 0.5 → 1, 1.5 → 2, 2.5 → 3, -0.51 → -1
    u = np.array([-0.51, -0.5, 0.0, 0.49, 0.5, 1.5, 2.5])
    assert pixel_index(u).tolist() == [-1, 0, 0, 0, 1, 2, 3]
    assert pixel_index(torch.tensor(u)).tolist() == [-1, 0, 0, 0, 1, 2, 3]  # round-half-even gives 0, 2, 2 here
    assert pixel_index(torch.tensor(u)).dtype == torch.int64


def test_kitti_and_pinhole_cameras_land_on_the_same_hand_computed_pixels():
    # camera at the origin looking along world +x (x right = world -y, y down = world -z); f = 10, c = (4.5, 2.5)
    K = np.array([[10.0, 0, 4.5], [0, 10.0, 2.5], [0, 0, 1]])
    c2w = np.array([[0.0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
    # world (2, -0.3, 0.1) → camera (0.3, -0.1, 2) → u = 10 * 0.15 + 4.5 = 6.0, v = 10 * -0.05 + 2.5 = 2.0
    # world (4, -0.2, -0.2) → camera (0.2, 0.2, 4) → (5.0, 3.0); world (1, -0.5, 0) → (9.5, 2.5): halves → (10, 3)
    points = np.array([[2.0, -0.3, 0.1], [4.0, -0.2, -0.2], [1.0, -0.5, 0.0], [-1.0, 0.0, 0.0]])
    uv, z = project(torch.tensor(points), torch.tensor(K), torch.tensor(c2w))
    assert torch.allclose(uv[:3], torch.tensor([[6.0, 2.0], [5.0, 3.0], [9.5, 2.5]]), atol=1e-6)
    assert torch.allclose(z, torch.tensor([2.0, 4.0, 1.0, -1.0]))
    assert pixel_index(uv[:3]).tolist() == [[6, 2], [5, 3], [10, 3]]
    P2 = np.concatenate([K, np.zeros((3, 1))], 1)  # KITTI form of the same camera: P2 = [K | 0], Tr = world → camera
    proj = project_points(points, P2, np.linalg.inv(c2w), image_size=(12, 5))
    assert proj.pixel.tolist() == [[6, 2], [5, 3], [10, 3], [-1, -1]]
    assert proj.valid.tolist() == [True, True, True, False] and proj.num_behind == 1 and proj.num_outside == 0
    origins, dirs = generate_rays(torch.tensor(K), torch.tensor(c2w), uv[:3])  # and back along the rays
    assert torch.allclose(origins + z[:3, None] * dirs, torch.tensor(points[:3]).float(), atol=1e-5)


def test_look_at_builds_the_pose_used_above():
    assert torch.allclose(look_at(torch.zeros(3), torch.tensor([1.0, 0, 0])),
                          torch.tensor([[0.0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]]))
