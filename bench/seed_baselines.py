"""The source document's own code paths, ported faithfully, as the baselines of ``make bench``.

Ported from the source document (seed), sections 2-4; changes are only those listed here:

- ``generate_fg_bg_images_jpg``: the document links the script but does not print it; this follows its
  description in section 2c: PIL ``Image.open`` of the loose fg/bg/mask JPEGs, ``transpose(FLIP_LEFT_RIGHT)``
  for the flip, ``np.random.choice(80, 20, replace=False)`` per axis, PIL ``paste`` of the foreground with its
  mask on a copy of the background and of the mask on a black image, ``save`` of each to a loose JPEG at
  PIL's default settings (quality 75, 4:2:0), one process. Where the description is silent the cheaper
  choice is taken: the black image is single-channel ("L"), the fg and mask are opened once per foreground.
- ``map_names``: the document's Data Mapping loop, statement for statement, without its six ``print``
  calls (printing 40M lines would dominate the time) and returning the lists it fills.
- ``MasterDataset`` and ``seed_transform``: as printed in section 4.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms


def generate_fg_bg_images_jpg(fg_dir, bg_dir, mask_dir, fg_bg_dir, mask_black_dir, placements=20, offset_range=80):
    """The seed's generation loop: every fg (and its flip) on every bg at ``placements`` positions."""
    np.random.seed(0)
    for fg_file in os.listdir(fg_dir):
        fg_num = fg_file[fg_file.rfind("_") + 1 : fg_file.rfind(".jpg")]
        fg = Image.open(os.path.join(fg_dir, fg_file))
        mask = Image.open(os.path.join(mask_dir, "mask_img_" + fg_num + ".jpg"))
        for bg_file in os.listdir(bg_dir):
            bg_num = bg_file[bg_file.rfind("_") + 1 : bg_file.rfind(".jpg")]
            bg = Image.open(os.path.join(bg_dir, bg_file))
            for flip in (0, 1):
                fg_img = fg.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else fg
                mask_img = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else mask
                xs = np.random.choice(offset_range, placements, replace=False)
                ys = np.random.choice(offset_range, placements, replace=False)
                for k in range(placements):
                    position = (int(xs[k]), int(ys[k]))
                    stem = f"{fg_num}_{bg_num}_{flip}_{k + 1}"
                    fg_bg = bg.copy()
                    fg_bg.paste(fg_img, position, mask_img)
                    fg_bg.save(os.path.join(fg_bg_dir, "fg_bg_" + stem + ".jpg"))
                    mask_black = Image.new("L", bg.size)
                    mask_black.paste(mask_img, position)
                    mask_black.save(os.path.join(mask_black_dir, "bg_mask_" + stem + ".jpg"))


def map_names(fg_file_names, bg_file_names, mask_file_names, dp_file_names, fg_bg_file_names):
    """The seed's Data Mapping: for every fg x bg, a prefix scan of every composite name."""
    forground_image_names = []
    bg_mask_img_names = []
    bg_dp_img_names = []
    bg_fg_bg_img_names = []

    mask_img_names = []
    dp_img_names = []
    fg_images_names = []
    fg_bg_img_names = []

    for i in range(len(fg_file_names)):
        fg_str = fg_file_names[i].split("/")[-1]
        fg_name = fg_str[0 : fg_str.rfind(".jpg")]
        forground_image_names.append(fg_name)

    for i in range(len(forground_image_names)):
        for j in range(len(bg_file_names)):
            bg_str = bg_file_names[j].split("_")[-1]
            bg_num = bg_str[0 : bg_str.rfind(".jpg")]
            search_str_mask = "bg_mask" + forground_image_names[i][6:]
            search_str_mask = search_str_mask + "_" + bg_num + "_"
            search_str_depth_fg_bg = "depth_fg_bg" + forground_image_names[i][6:]
            search_str_depth_fg_bg = search_str_depth_fg_bg + "_" + bg_num + "_"

            search_str_fg_bg = "fg_bg" + forground_image_names[i][6:]
            search_str_fg_bg = search_str_fg_bg + "_" + bg_num + "_"

            for k in range(len(mask_file_names)):
                mask_str = mask_file_names[k].split("/")[-1]
                fg_depth_bg_str = dp_file_names[k].split("/")[-1]
                fg_bg_str = fg_bg_file_names[k].split("/")[-1]
                if mask_str.startswith(search_str_mask):
                    mask_img_names.append(mask_file_names[k])
                    bg_mask_img_names.append(bg_file_names[j])
                if fg_bg_str.startswith(search_str_fg_bg):
                    fg_bg_img_names.append(fg_bg_file_names[k])
                    bg_fg_bg_img_names.append(bg_file_names[j])
                if fg_depth_bg_str.startswith(search_str_depth_fg_bg):
                    dp_img_names.append(dp_file_names[k])
                    bg_dp_img_names.append(bg_file_names[j])
                    fg_images_names.append(fg_file_names[i])
    return {
        "mask": mask_img_names,
        "bg_mask": bg_mask_img_names,
        "fg_bg": fg_bg_img_names,
        "bg_fg_bg": bg_fg_bg_img_names,
        "depth": dp_img_names,
        "bg_depth": bg_dp_img_names,
        "fg": fg_images_names,
    }


class MasterDataset(Dataset):
    def __init__(self, transform=None, bg_files=None, fg_bg_files=None, ms_bg_files=None, dp_files=None):
        self.bg_files = bg_files
        self.fg_bg_files = fg_bg_files
        self.ms_bg_files = ms_bg_files
        self.dp_files = dp_files
        self.transform = transform

    def __len__(self):
        return len(self.bg_files)

    def __getitem__(self, index):
        bg_image = Image.open(self.bg_files[index])
        fg_bg_image = Image.open(self.fg_bg_files[index])
        ms_bg_image = Image.open(self.ms_bg_files[index])
        dp_image = Image.open(self.dp_files[index])
        if self.transform:
            bg_image = self.transform(bg_image)
            fg_bg_image = self.transform(fg_bg_image)
            ms_bg_image = self.transform(ms_bg_image)
            dp_image = self.transform(dp_image)
        return {"bg_image": bg_image, "fg_bg_image": fg_bg_image, "ms_bg_image": ms_bg_image, "dp_image": dp_image}


def seed_transform(size=64):
    """The document's ``train_transform`` (its unused mean/std line left out)."""
    return transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.Grayscale(num_output_channels=3),
            transforms.ToTensor(),
        ]
    )
