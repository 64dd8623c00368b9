"""Reading scans and writing masks (`pejax.inference.image_files`) on small files made here: the intensity
rule of each format, orientation, geometry carried to the output, and clear errors."""

import gzip
import math
import struct
import zlib

import nibabel
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from data_builders.acdc.acdc_dataset_builder import scale_intensities
from pejax.inference import image_files, mask_files
from pejax.errors import InputFileError, SettingError

RNG = np.random.default_rng(0)


def test_png_8_and_16_bit_and_jpeg_are_read_as_displayed(tmp_path):
  values8 = RNG.integers(0, 256, (9, 11)).astype(np.uint8)
  values16 = RNG.integers(0, 65536, (9, 11)).astype(np.uint16)
  Image.fromarray(values8).save(tmp_path / 'a.png')
  Image.fromarray(values16).save(tmp_path / 'b.png')
  Image.fromarray(np.stack([values8] * 3, axis=-1)).save(tmp_path / 'c.jpg', quality=100)
  eight, sixteen, jpeg = (image_files.read_scan(tmp_path / name) for name in ('a.png', 'b.png',
                                                                              'c.jpg'))
  assert eight.values.shape == (1, 9, 11) and not eight.is_volume and eight.spacing is None
  np.testing.assert_allclose(image_files.intensities01(eight)[0][0], values8 / 255, atol=1e-7)
  np.testing.assert_allclose(image_files.intensities01(sixteen)[0][0], values16 / 65535, atol=1e-7)
  assert image_files.intensities01(sixteen)[1] == 'displayed'
  assert jpeg.kind == 'jpeg'
  np.testing.assert_allclose(jpeg.values[0], values8 / 255, atol=3 / 255)  # JPEG is lossy


def test_raw_jsrt_image_is_inverted_as_the_builder_stores_it(tmp_path):
  values = RNG.integers(0, 4096, (2048, 2048)).astype('>u2')
  (tmp_path / 'JPCLN001.IMG').write_bytes(values.tobytes())
  scan = image_files.read_scan(tmp_path / 'JPCLN001.IMG')
  images01, rule = image_files.intensities01(scan)
  assert rule == 'jsrt_raw'
  np.testing.assert_allclose(images01[0], 1 - values / 4095, atol=1e-6)
  assert scan.spacing[1:] == (0.175, 0.175)
  (tmp_path / 'short.IMG').write_bytes(values.tobytes()[:1000])
  with pytest.raises(InputFileError, match=r'short\.IMG.* has 1000 bytes'):
    image_files.read_scan(tmp_path / 'short.IMG')


def nifti_volume(tmp_path, shape=(12, 10, 3), zooms=(1.5, 1.25, 8.0), name='scan.nii.gz'):
  data = RNG.normal(300, 80, shape).astype(np.float32)
  data.flat[0] = 1e5  # an outlier the percentile clipping removes
  affine = np.diag((tuple(zooms) + (1.0,) * 4)[:3] + (1.0,))
  nibabel.save(nibabel.Nifti1Image(data, affine), str(tmp_path / name))
  return data


def test_nifti_volume_slices_orientation_spacing_and_percentile_scaling(tmp_path):
  data = nifti_volume(tmp_path)
  scan = image_files.read_scan(tmp_path / 'scan.nii.gz')
  assert scan.is_volume and scan.values.shape == (3, 10, 12)
  np.testing.assert_array_equal(scan.values[2], data[:, :, 2].T)
  assert scan.spacing == (8.0, 1.25, 1.5)
  images01, rule = image_files.intensities01(scan)
  assert rule == 'percentile'
  np.testing.assert_array_equal(images01, scale_intensities(np.transpose(data, (2, 1, 0))))
  labels = (images01 > 0.5).astype(np.uint8)
  path = mask_files.write_mask(scan, labels, str(tmp_path / 'scan_labels'))
  written = nibabel.load(path)
  assert path.endswith('.nii.gz') and written.shape == data.shape
  np.testing.assert_array_equal(written.affine, nibabel.load(str(tmp_path / 'scan.nii.gz')).affine)
  np.testing.assert_array_equal(np.asarray(written.dataobj)[:, :, 1].T, labels[1])


def test_nifti_2d_and_4d(tmp_path):
  nifti_volume(tmp_path, shape=(12, 8), zooms=(0.5, 0.25), name='flat.nii')
  scan = image_files.read_scan(tmp_path / 'flat.nii')
  assert not scan.is_volume and scan.values.shape == (1, 8, 12)
  assert math.isnan(scan.spacing[0]) and scan.spacing[1:] == (0.25, 0.5)
  written = nibabel.load(mask_files.write_mask(scan, np.ones((1, 8, 12), np.uint8),
                                                str(tmp_path / 'flat_labels')))
  assert written.shape == (12, 8)
  nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 2, 5), np.float32), np.eye(4)),
               str(tmp_path / 'cine.nii.gz'))
  with pytest.raises(InputFileError, match=r'cine\.nii\.gz.*one time frame'):
    image_files.read_scan(tmp_path / 'cine.nii.gz')


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
  scan = image_files.read_scan(tmp_path / 'slice')
  assert scan.kind == 'dicom' and scan.spacing[1:] == (1.25, 1.5)
  np.testing.assert_array_equal(scan.values[0], pixels * 2.0 - 100)
  make_dicom(tmp_path / 'inverted.dcm', pixels, 'MONOCHROME1')
  inverted = image_files.read_scan(tmp_path / 'inverted.dcm').values[0]
  np.testing.assert_array_equal(inverted, scan.values[0].max() + scan.values[0].min()
                                - scan.values[0])
  labels = RNG.integers(0, 4, (1, 20, 24)).astype(np.uint8)
  first = mask_files.write_mask(scan, labels, str(tmp_path / 'slice_labels'))
  written = pydicom.dcmread(first)
  np.testing.assert_array_equal(written.pixel_array, labels[0])
  assert [float(v) for v in written.PixelSpacing] == [1.25, 1.5]
  assert list(written.ImagePositionPatient) == list(source.ImagePositionPatient)
  assert written.SeriesInstanceUID != source.SeriesInstanceUID
  assert 'RescaleSlope' not in written and written.SeriesDescription == 'pejax labels'
  again = pydicom.dcmread(mask_files.write_mask(scan, labels, str(tmp_path / 'again')))
  assert again.SeriesInstanceUID == written.SeriesInstanceUID  # one series, run after run


def test_png_masks_hold_the_class_indices_and_overlays_are_rgb(tmp_path):
  Image.fromarray(np.zeros((8, 10), np.uint8)).save(tmp_path / 'x.png')
  scan = image_files.read_scan(tmp_path / 'x.png')
  labels = RNG.integers(0, 4, (1, 8, 10)).astype(np.uint8)
  written = Image.open(mask_files.write_mask(scan, labels, str(tmp_path / 'x_labels')))
  assert written.mode == 'P'
  np.testing.assert_array_equal(np.asarray(written), labels[0])
  overlay = Image.open(mask_files.write_overlay(np.zeros((5, 6, 8), np.float32),
                                                 np.ones((5, 6, 8), np.uint8), str(tmp_path / 'o.png')))
  assert overlay.mode == 'RGB' and overlay.size == (4 * 8, 2 * 6)  # 5 slices in rows of 4


def test_errors_name_the_file(tmp_path):
  (tmp_path / 'a.txt').write_text('x')
  with pytest.raises(InputFileError, match=r'a\.txt: unsupported format'):
    image_files.read_scan(tmp_path / 'a.txt')
  with pytest.raises(InputFileError, match=r'gone\.png: no such file'):
    image_files.read_scan(tmp_path / 'gone.png')
  (tmp_path / 'bad.png').write_bytes(b'\x89PNG broken')
  with pytest.raises(InputFileError, match=r'bad\.png: cannot be read as png'):
    image_files.read_scan(tmp_path / 'bad.png')
  nifti_volume(tmp_path)
  with pytest.raises(InputFileError, match=r'scan\.nii\.gz: values .* not intensities in \[0, 1\]'):
    image_files.intensities01(image_files.read_scan(tmp_path / 'scan.nii.gz'), 'as_is')


def test_inputs_from_folders_and_comma_lists(tmp_path):
  (tmp_path / 'sub').mkdir()
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / 'sub' / 'b.png')
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / 'a.png')
  (tmp_path / 'sub' / 'notes.txt').write_text('skip me')
  make_dicom(tmp_path / 'sub' / 'IM0001', np.zeros((4, 4), np.uint16))
  found = image_files.find_inputs([str(tmp_path), f'{tmp_path / "a.png"},{tmp_path / "c.png"}'])
  names = [path.name for path in found]
  assert names == ['a.png', 'IM0001', 'b.png', 'c.png']


# ------------------------------------------------------------- files predict cannot take


def png_header(path, width, height):
  """A PNG whose header claims `width` x `height` pixels and holds almost none: what a
  decompression bomb's header looks like to a reader."""
  def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
  header = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)  # 8-bit gray
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header)
                   + chunk(b'IDAT', zlib.compress(b'')) + chunk(b'IEND', b''))


def nifti_header(path, shape, dtype=np.int16):
  """A gzipped NIfTI whose header claims `shape` and which holds no voxels."""
  header = nibabel.Nifti1Header()
  header.set_data_shape(shape)
  header.set_data_dtype(dtype)
  header['vox_offset'] = 352
  path.write_bytes(gzip.compress(header.binaryblock + b'\0' * 4))


def test_non_finite_values_are_refused_with_their_count(tmp_path):
  data = nifti_volume(tmp_path)
  data[3, 4, 1], data[5, 5, 2], data[0, 0, 0] = np.nan, np.inf, -np.inf
  nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), str(tmp_path / 'holes.nii.gz'))
  with pytest.raises(InputFileError, match=r'holes\.nii\.gz: 3 of 360 values are not finite \(NaN '
                     r'or infinite\); pejax does not guess'):
    image_files.read_scan(tmp_path / 'holes.nii.gz')
  make_dicom(tmp_path / 'slope.dcm', np.zeros((8, 9), np.uint16))
  dataset = pydicom.dcmread(tmp_path / 'slope.dcm')
  with pytest.warns(UserWarning, match='Invalid value for VR DS'):
    dataset.RescaleSlope = 'NaN'  # a damaged modality LUT makes every value NaN
  dataset.save_as(tmp_path / 'slope.dcm')
  with pytest.raises(InputFileError, match=r'slope\.dcm: 72 of 72 values are not finite'):
    image_files.read_scan(tmp_path / 'slope.dcm')


def test_sizes_predict_cannot_take_are_named_before_decoding(tmp_path):
  Image.fromarray(np.zeros((64, 1), np.uint8)).save(tmp_path / 'line.png')
  with pytest.raises(InputFileError, match=r'line\.png: 1 x 64 pixels; pejax predicts images of at '
                     r'least 8 x 8 pixels'):
    image_files.read_scan(tmp_path / 'line.png')
  nibabel.save(nibabel.Nifti1Image(np.zeros((16, 16, 0), np.float32), np.eye(4)),
               str(tmp_path / 'empty.nii.gz'))
  with pytest.raises(InputFileError, match=r'empty\.nii\.gz: 16 x 16 pixels x 0 slices'):
    image_files.read_scan(tmp_path / 'empty.nii.gz')
  nifti_header(tmp_path / 'long.nii.gz', (16, 16, 5000))
  with pytest.raises(InputFileError, match=r'long\.nii\.gz: 16 x 16 pixels x 5000 slices, more '
                     r'than the 2048 slices pejax predicts in one file'):
    image_files.read_scan(tmp_path / 'long.nii.gz')
  nifti_header(tmp_path / 'cine.nii.gz', (16, 16, 1, 30))
  with pytest.raises(InputFileError, match=r'cine\.nii\.gz: a NIfTI of shape \(16, 16, 1, 30\).*one '
                     'time frame'):
    image_files.read_scan(tmp_path / 'cine.nii.gz')
  nifti_header(tmp_path / 'complex.nii.gz', (16, 16), np.complex64)
  with pytest.raises(InputFileError, match=r'complex\.nii\.gz: complex64 values; pejax models '
                     'take one real value per pixel'):
    image_files.read_scan(tmp_path / 'complex.nii.gz')


def test_decompression_bombs_are_refused_from_their_headers(tmp_path):
  assert image_files.MAX_PIXELS == 2 ** 28
  # PIL's own check, at pejax's limit: its warning (above the limit) is an error here too.
  png_header(tmp_path / 'bomb.png', 20000, 20000)
  with pytest.raises(InputFileError, match=r'bomb\.png: 20000 x 20000 pixels, more than the '
                     r'268,435,456 pixels pejax decodes from one file '
                     r'\(pejax\.inference\.image_files\.MAX_PIXELS\)'):
    image_files.read_scan(tmp_path / 'bomb.png')
  png_header(tmp_path / 'huge.png', 100000, 100000)  # PIL's error (twice the limit)
  with pytest.raises(InputFileError, match=r'huge\.png: 100000 x 100000 pixels, more than'):
    image_files.read_scan(tmp_path / 'huge.png')
  nifti_header(tmp_path / 'ct.nii.gz', (1024, 1024, 512))
  with pytest.raises(InputFileError, match=r'ct\.nii\.gz: 1024 x 1024 pixels x 512 slices, more '
                     'than the 268,435,456 pixels'):
    image_files.read_scan(tmp_path / 'ct.nii.gz')
  dataset = make_dicom(tmp_path / 'frames.dcm', np.zeros((8, 8), np.uint16))
  dataset.Rows, dataset.Columns, dataset.NumberOfFrames = 16384, 16384, 2
  dataset.save_as(tmp_path / 'frames.dcm', enforce_file_format=True)
  with pytest.raises(InputFileError, match=r'frames\.dcm: 16384 x 16384 pixels x 2 slices, more '
                     'than the 268,435,456 pixels'):
    image_files.read_scan(tmp_path / 'frames.dcm')


def test_find_inputs_skips_the_output_folder_and_files_named_as_pejax_writes_them(tmp_path):
  scans = tmp_path / 'scans'
  (scans / 'predicted').mkdir(parents=True)
  for name in ('a.png', 'predicted/a_labels.png', 'predicted/a_overlay.png', 'b_labels.png',
               'b_overlay.png', 'b.png'):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(scans / name)
  nifti_volume(scans, name='c_labels.nii.gz')
  make_dicom(scans / 'd_labels.dcm', np.zeros((8, 8), np.uint16))
  (scans / 'predicted' / 'predictions.csv').write_text('input,status\n')
  names = [path.name for path in image_files.find_inputs([str(scans)], output=scans / 'predicted')]
  assert names == ['a.png', 'b.png']
  # The output folder is the input folder: only pejax's own outputs are passed over.
  assert [path.name for path in image_files.find_inputs([str(scans)], output=scans)] == [
      'a.png', 'b.png']
  # A file named on its own is an input, whatever its name.
  named = image_files.find_inputs([str(scans / 'b_labels.png')], output=scans)
  assert [path.name for path in named] == ['b_labels.png']
  with pytest.raises(SettingError, match=r"--input='s3://bucket/scans' is not allowed"):
    image_files.find_inputs(['s3://bucket/scans'])
