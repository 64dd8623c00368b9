"""Reading scans and writing masks (`pejax.image_io`) on small files made here: the intensity
rule of each format, orientation, geometry carried to the output, and clear errors."""

import math

import nibabel
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from data_builders.acdc.acdc_dataset_builder import scale_intensities
from pejax import image_io
from pejax.errors import InputFileError

RNG = np.random.default_rng(0)


def test_png_8_and_16_bit_and_jpeg_are_read_as_displayed(tmp_path):
  values8 = RNG.integers(0, 256, (5, 7)).astype(np.uint8)
  values16 = RNG.integers(0, 65536, (5, 7)).astype(np.uint16)
  Image.fromarray(values8).save(tmp_path / 'a.png')
  Image.fromarray(values16).save(tmp_path / 'b.png')
  Image.fromarray(np.stack([values8] * 3, axis=-1)).save(tmp_path / 'c.jpg', quality=100)
  eight, sixteen, jpeg = (image_io.read_scan(tmp_path / name) for name in ('a.png', 'b.png',
                                                                          'c.jpg'))
  assert eight.values.shape == (1, 5, 7) and not eight.is_volume and eight.spacing is None
  np.testing.assert_allclose(image_io.intensities01(eight)[0][0], values8 / 255, atol=1e-7)
  np.testing.assert_allclose(image_io.intensities01(sixteen)[0][0], values16 / 65535, atol=1e-7)
  assert image_io.intensities01(sixteen)[1] == 'displayed'
  assert jpeg.kind == 'jpeg'
  np.testing.assert_allclose(jpeg.values[0], values8 / 255, atol=3 / 255)  # JPEG is lossy


def test_raw_jsrt_image_is_inverted_as_the_builder_stores_it(tmp_path):
  values = RNG.integers(0, 4096, (2048, 2048)).astype('>u2')
  (tmp_path / 'JPCLN001.IMG').write_bytes(values.tobytes())
  scan = image_io.read_scan(tmp_path / 'JPCLN001.IMG')
  images01, rule = image_io.intensities01(scan)
  assert rule == 'jsrt_raw'
  np.testing.assert_allclose(images01[0], 1 - values / 4095, atol=1e-6)
  assert scan.spacing[1:] == (0.175, 0.175)
  (tmp_path / 'short.IMG').write_bytes(values.tobytes()[:1000])
  with pytest.raises(InputFileError, match=r'short\.IMG.* has 1000 bytes'):
    image_io.read_scan(tmp_path / 'short.IMG')


def nifti_volume(tmp_path, shape=(12, 10, 3), zooms=(1.5, 1.25, 8.0), name='scan.nii.gz'):
  data = RNG.normal(300, 80, shape).astype(np.float32)
  data.flat[0] = 1e5  # an outlier the percentile clipping removes
  affine = np.diag((tuple(zooms) + (1.0,) * 4)[:3] + (1.0,))
  nibabel.save(nibabel.Nifti1Image(data, affine), str(tmp_path / name))
  return data


def test_nifti_volume_slices_orientation_spacing_and_percentile_scaling(tmp_path):
  data = nifti_volume(tmp_path)
  scan = image_io.read_scan(tmp_path / 'scan.nii.gz')
  assert scan.is_volume and scan.values.shape == (3, 10, 12)
  np.testing.assert_array_equal(scan.values[2], data[:, :, 2].T)
  assert scan.spacing == (8.0, 1.25, 1.5)
  images01, rule = image_io.intensities01(scan)
  assert rule == 'percentile'
  np.testing.assert_array_equal(images01, scale_intensities(np.transpose(data, (2, 1, 0))))
  labels = (images01 > 0.5).astype(np.uint8)
  path = image_io.write_mask(scan, labels, str(tmp_path / 'scan_labels'))
  written = nibabel.load(path)
  assert path.endswith('.nii.gz') and written.shape == data.shape
  np.testing.assert_array_equal(written.affine, nibabel.load(str(tmp_path / 'scan.nii.gz')).affine)
  np.testing.assert_array_equal(np.asarray(written.dataobj)[:, :, 1].T, labels[1])


def test_nifti_2d_and_4d(tmp_path):
  nifti_volume(tmp_path, shape=(6, 4), zooms=(0.5, 0.25), name='flat.nii')
  scan = image_io.read_scan(tmp_path / 'flat.nii')
  assert not scan.is_volume and scan.values.shape == (1, 4, 6)
  assert math.isnan(scan.spacing[0]) and scan.spacing[1:] == (0.25, 0.5)
  written = nibabel.load(image_io.write_mask(scan, np.ones((1, 4, 6), np.uint8),
                                             str(tmp_path / 'flat_labels')))
  assert written.shape == (6, 4)
  nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 2, 5), np.float32), np.eye(4)),
               str(tmp_path / 'cine.nii.gz'))
  with pytest.raises(InputFileError, match=r'cine\.nii\.gz.*one time frame'):
    image_io.read_scan(tmp_path / 'cine.nii.gz')


def make_dicom(path, pixels, photometric='MONOCHROME2'):
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = MRImageStorage
  meta.MediaStorageSOPInstanceUID = generate_uid()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  dataset = Dataset()
  dataset.file_meta = meta
  dataset.SOPClassUID, dataset.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
  dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
  dataset.Modality = 'MR'
  dataset.PixelSpacing = [1.25, 1.5]
  dataset.ImagePositionPatient = [10.0, -20.0, 30.0]
  dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
  dataset.set_pixel_data(pixels, photometric, 12)
  dataset.RescaleSlope, dataset.RescaleIntercept = 2, -100
  dataset.save_as(path, enforce_file_format=True)
  return dataset


def test_dicom_modality_lut_inversion_and_a_label_image_with_the_same_geometry(tmp_path):
  pixels = RNG.integers(0, 4096, (20, 24)).astype(np.uint16)
  source = make_dicom(tmp_path / 'slice', pixels)  # no suffix: found by its preamble
  scan = image_io.read_scan(tmp_path / 'slice')
  assert scan.kind == 'dicom' and scan.spacing[1:] == (1.25, 1.5)
  np.testing.assert_array_equal(scan.values[0], pixels * 2.0 - 100)
  make_dicom(tmp_path / 'inverted.dcm', pixels, 'MONOCHROME1')
  inverted = image_io.read_scan(tmp_path / 'inverted.dcm').values[0]
  np.testing.assert_array_equal(inverted, scan.values[0].max() + scan.values[0].min()
                                - scan.values[0])
  labels = RNG.integers(0, 4, (1, 20, 24)).astype(np.uint8)
  first = image_io.write_mask(scan, labels, str(tmp_path / 'slice_labels'))
  written = pydicom.dcmread(first)
  np.testing.assert_array_equal(written.pixel_array, labels[0])
  assert [float(v) for v in written.PixelSpacing] == [1.25, 1.5]
  assert list(written.ImagePositionPatient) == list(source.ImagePositionPatient)
  assert written.SeriesInstanceUID != source.SeriesInstanceUID
  assert 'RescaleSlope' not in written and written.SeriesDescription == 'pejax labels'
  again = pydicom.dcmread(image_io.write_mask(scan, labels, str(tmp_path / 'again')))
  assert again.SeriesInstanceUID == written.SeriesInstanceUID  # one series, run after run


def test_png_masks_hold_the_class_indices_and_overlays_are_rgb(tmp_path):
  Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / 'x.png')
  scan = image_io.read_scan(tmp_path / 'x.png')
  labels = RNG.integers(0, 4, (1, 6, 8)).astype(np.uint8)
  written = Image.open(image_io.write_mask(scan, labels, str(tmp_path / 'x_labels')))
  assert written.mode == 'P'
  np.testing.assert_array_equal(np.asarray(written), labels[0])
  overlay = Image.open(image_io.write_overlay(np.zeros((5, 6, 8), np.float32),
                                              np.ones((5, 6, 8), np.uint8), str(tmp_path / 'o.png')))
  assert overlay.mode == 'RGB' and overlay.size == (4 * 8, 2 * 6)  # 5 slices in rows of 4


def test_errors_name_the_file(tmp_path):
  (tmp_path / 'a.txt').write_text('x')
  with pytest.raises(InputFileError, match=r'a\.txt: unsupported format'):
    image_io.read_scan(tmp_path / 'a.txt')
  with pytest.raises(InputFileError, match=r'gone\.png: no such file'):
    image_io.read_scan(tmp_path / 'gone.png')
  (tmp_path / 'bad.png').write_bytes(b'\x89PNG broken')
  with pytest.raises(InputFileError, match=r'bad\.png: cannot be read as png'):
    image_io.read_scan(tmp_path / 'bad.png')
  nifti_volume(tmp_path)
  with pytest.raises(InputFileError, match=r'scan\.nii\.gz: values .* not intensities in \[0, 1\]'):
    image_io.intensities01(image_io.read_scan(tmp_path / 'scan.nii.gz'), 'as_is')


def test_inputs_from_folders_and_comma_lists(tmp_path):
  (tmp_path / 'sub').mkdir()
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / 'sub' / 'b.png')
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / 'a.png')
  (tmp_path / 'sub' / 'notes.txt').write_text('skip me')
  make_dicom(tmp_path / 'sub' / 'IM0001', np.zeros((4, 4), np.uint16))
  found = image_io.find_inputs([str(tmp_path), f'{tmp_path / "a.png"},{tmp_path / "c.png"}'])
  names = [path.name for path in found]
  assert names == ['a.png', 'IM0001', 'b.png', 'c.png']
