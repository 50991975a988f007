"""Test material for de-identification: richly identified DICOM objects and RT Structure Sets.

Everything here is written with pydicom directly (never with the code under test), so that a
mistake shared by the de-identification engine and its reader still fails.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID

PYDICOM_3 = int(pydicom.__version__.split(".")[0]) >= 3
RTSTRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
MR_CLASS = "1.2.840.10008.5.1.4.1.1.4"
STUDY_COMPONENT_CLASS = "1.2.840.10008.3.1.2.3.1"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
BIG = "1.2.840.10008.1.2.2"

#: The identifying values planted by :func:`identified_dataset` (what must never survive).
PLANTED = {
    "PatientName": "Chen^Meiling=陈^美玲", "PatientID": "A77812345", "IssuerOfPatientID": "TPE-VGH",
    "PatientBirthDate": "19570308", "OtherPatientIDs": "A123456789", "OtherPatientNames": "Chen^Mei",
    "AdditionalPatientHistory": "Chen Meiling, headache for 3 months", "PatientComments": "call daughter 0912345678",
    "AccessionNumber": "RAH00077", "ReferringPhysicianName": "Lin^Zhiwei", "NameOfPhysiciansReadingStudy": "Wu^Jiahao",
    "OperatorsName": "Huang^Yating", "PhysiciansOfRecord": "Lin^Zhiwei", "StudyComments": "urgent, VIP patient",
    "InstitutionName": "Taipei Veterans General Hospital", "StationName": "MRI3-NORTH",
    "InstitutionalDepartmentName": "Neuroradiology", "AdmittingDiagnosesDescription": "metastatic lung cancer",
    "DeviceSerialNumber": "SN-448812", "RequestingPhysician": "Chang^Wei", "PerformedProcedureStepID": "PPS9931",
    "PerformedProcedureStepDescription": "Brain MR with contrast for Chen Meiling",
    "PatientAddress": "No. 201, Sec. 2, Shipai Rd., Beitou District, Taipei", "StudyID": "ST7781",
    "ImageComments": "Chen Meiling repeat scan",
}


def file_meta(sop_class: str, sop_instance: str, syntax: str = EXPLICIT) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(syntax)
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.9.7156.1")
    meta.SourceApplicationEntityTitle = "MRI3-NORTH"
    return meta


def save(ds: Dataset, path: Any, syntax: Optional[str] = None) -> Path:
    """Write ``ds`` with the transfer syntax of its meta (or ``syntax``), on pydicom 2.4 and 3."""
    if syntax is not None:
        ds.file_meta.TransferSyntaxUID = UID(syntax)
    ts = str(ds.file_meta.TransferSyntaxUID)
    implicit = ts == IMPLICIT
    little = ts != BIG
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if PYDICOM_3:
        ds.save_as(str(out), implicit_vr=implicit, little_endian=little, enforce_file_format=True)
    else:
        ds.is_implicit_VR = implicit
        ds.is_little_endian = little
        ds.save_as(str(out), write_like_original=False)
    return out


def _seq(*items: Dict[str, Any]) -> DicomSequence:
    out = []
    for item in items:
        ds = Dataset()
        for key, value in item.items():
            setattr(ds, key, value)
        out.append(ds)
    return DicomSequence(out)


def identified_dataset(modality: str = "MR", index: int = 0, *, study_uid: str = "1.3.6.1.4.1.9590.100.1.2.1",
                       series_uid: str = "1.3.6.1.4.1.9590.100.1.2.2", frame_uid: str = "1.3.6.1.4.1.9590.100.1.2.3",
                       rows: int = 4, columns: int = 5, patient: Optional[Dict[str, str]] = None) -> Dataset:
    """An MR (or CT) image carrying every attribute of seed 002/004 tables plus more identifiers,
    a private block, nested UIDs and a 4x5 pixel array whose values depend on ``index``."""
    values = dict(PLANTED, **(patient or {}))
    sop_uid = f"1.3.6.1.4.1.9590.100.1.2.{100 + index}"
    sop_class = MR_CLASS if modality == "MR" else "1.2.840.10008.5.1.4.1.1.2"
    ds = Dataset()
    ds.file_meta = file_meta(sop_class, sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.InstanceCreationDate = "20170415"
    ds.InstanceCreationTime = "093436.598"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "20170415"
    ds.SeriesDate = "20170415"
    ds.AcquisitionDate = "20170416"
    ds.ContentDate = "20170415"
    ds.AcquisitionDateTime = "20170415093436.598000"
    ds.StudyTime = "093436.598"
    ds.SeriesTime = "093500"
    ds.AccessionNumber = values["AccessionNumber"]
    ds.Modality = modality
    ds.Manufacturer = "FUJIFILM Corporation"
    ds.InstitutionName = values["InstitutionName"]
    ds.InstitutionAddress = "201 Shipai Road, Taipei"
    ds.ReferringPhysicianName = values["ReferringPhysicianName"]
    ds.StationName = values["StationName"]
    ds.StudyDescription = "GK image special process"
    ds.SeriesDescription = "AXI T1 SE+C"
    ds.InstitutionalDepartmentName = values["InstitutionalDepartmentName"]
    ds.PhysiciansOfRecord = values["PhysiciansOfRecord"]
    ds.NameOfPhysiciansReadingStudy = values["NameOfPhysiciansReadingStudy"]
    ds.OperatorsName = values["OperatorsName"]
    ds.AdmittingDiagnosesDescription = values["AdmittingDiagnosesDescription"]
    ds.ManufacturerModelName = "MAGNETOM VISION"
    ds.ReferencedPerformedProcedureStepSequence = _seq(
        {"ReferencedSOPClassUID": "1.2.840.10008.3.1.2.3.3", "ReferencedSOPInstanceUID": "1.3.6.1.4.1.9590.100.1.9.1"})
    ds.ReferencedImageSequence = _seq(
        {"ReferencedSOPClassUID": sop_class, "ReferencedSOPInstanceUID": "1.3.6.1.4.1.9590.100.1.2.100"})
    ds.PatientName = values["PatientName"]
    ds.PatientID = values["PatientID"]
    ds.IssuerOfPatientID = values["IssuerOfPatientID"]
    ds.PatientBirthDate = values["PatientBirthDate"]
    ds.PatientSex = "F"
    ds.OtherPatientIDs = values["OtherPatientIDs"]
    ds.OtherPatientNames = values["OtherPatientNames"]
    ds.PatientAge = "062Y"
    ds.PatientAddress = values["PatientAddress"]
    ds.AdditionalPatientHistory = values["AdditionalPatientHistory"]
    ds.PatientComments = values["PatientComments"]
    ds.DeviceSerialNumber = values["DeviceSerialNumber"]
    ds.SoftwareVersions = "1.0"
    ds.ProtocolName = "AX T1 SE"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = values["StudyID"]
    ds.SeriesNumber = 5
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [-100.0, -120.0, float(2 * index)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = frame_uid
    ds.ImageComments = values["ImageComments"]
    ds.StudyStatusID = "READ"
    ds.RequestingPhysician = values["RequestingPhysician"]
    ds.RequestingService = "AIR"
    ds.RequestedProcedureDescription = "HAND BILAT"
    ds.StudyComments = values["StudyComments"]
    ds.AdmittingDate = "20170414"
    ds.PerformedProcedureStepID = values["PerformedProcedureStepID"]
    ds.PerformedProcedureStepDescription = values["PerformedProcedureStepDescription"]
    ds.PerformedProtocolCodeSequence = _seq({"CodeValue": "BRAIN", "CodingSchemeDesignator": "99LOCAL",
                                             "CodeMeaning": "Brain routine"})
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "LO", "Chen Meiling A77812345")
    block.add_new(0x11, "UI", "1.3.6.1.4.1.9590.100.1.2.2")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = [0.9375, 0.9375]
    ds.SliceThickness = 2.0
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    pixels = (np.arange(rows * columns, dtype=np.uint16).reshape(rows, columns) * 7 + 1000 * index).astype("<u2")
    ds.PixelData = pixels.tobytes()
    return ds


def rtss_for(images: Sequence[Dataset], *, sop_uid: str = "1.3.6.1.4.1.9590.100.1.7.1",
             series_uid: str = "1.3.6.1.4.1.9590.100.1.7.2", roi_names: Sequence[str] = ("R_lat_temp", "L_frontal"),
             ) -> Dataset:
    """An RT Structure Set referencing ``images`` (one series): frame of reference, study, series,
    contour images, one closed contour per ROI on the first images, identifiers and a private tag."""
    first = images[0]
    ds = Dataset()
    ds.file_meta = file_meta(RTSTRUCT_CLASS, sop_uid, IMPLICIT)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstanceCreationDate = "20170420"
    ds.InstanceCreationTime = "101010"
    ds.SOPClassUID = RTSTRUCT_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = first.StudyDate
    ds.StudyTime = first.StudyTime
    ds.AccessionNumber = first.AccessionNumber
    ds.Modality = "RTSTRUCT"
    ds.Manufacturer = "Elekta"
    ds.ReferringPhysicianName = first.ReferringPhysicianName
    ds.StudyDescription = "GK image special process"
    ds.SeriesDescription = "RTSS"
    ds.OperatorsName = first.OperatorsName
    ds.ManufacturerModelName = "Leksell GammaPlan"
    ds.PatientName = first.PatientName
    ds.PatientID = first.PatientID
    ds.PatientBirthDate = first.PatientBirthDate
    ds.PatientSex = first.PatientSex
    ds.PatientAge = first.PatientAge
    ds.SoftwareVersions = "11.0"
    ds.StudyInstanceUID = first.StudyInstanceUID
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = first.StudyID
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "ROIs in axC"
    ds.StructureSetName = f"plan of {first.PatientName}"
    ds.StructureSetDate = "20170420"
    ds.StructureSetTime = "101010"
    contour_images = [{"ReferencedSOPClassUID": im.SOPClassUID, "ReferencedSOPInstanceUID": im.SOPInstanceUID}
                      for im in images]
    ds.ReferencedFrameOfReferenceSequence = _seq({
        "FrameOfReferenceUID": first.FrameOfReferenceUID,
        "RTReferencedStudySequence": _seq({
            "ReferencedSOPClassUID": STUDY_COMPONENT_CLASS,
            "ReferencedSOPInstanceUID": first.StudyInstanceUID,
            "RTReferencedSeriesSequence": _seq({
                "SeriesInstanceUID": first.SeriesInstanceUID,
                "ContourImageSequence": _seq(*contour_images),
            }),
        }),
    })
    ds.StructureSetROISequence = _seq(*[
        {"ROINumber": n + 1, "ReferencedFrameOfReferenceUID": first.FrameOfReferenceUID, "ROIName": name,
         "ROIGenerationAlgorithm": "MANUAL"} for n, name in enumerate(roi_names)])
    contours = []
    for n, _ in enumerate(roi_names):
        image = images[min(n, len(images) - 1)]
        z = float(image.ImagePositionPatient[2])
        contours.append({
            "ReferencedROINumber": n + 1, "ROIDisplayColor": [255, 0, 255],
            "ContourSequence": _seq({
                "ContourImageSequence": _seq({"ReferencedSOPClassUID": image.SOPClassUID,
                                              "ReferencedSOPInstanceUID": image.SOPInstanceUID}),
                "ContourGeometricType": "CLOSED_PLANAR", "NumberOfContourPoints": 4,
                "ContourData": [-10.0, -10.0, z, 10.0, -10.0, z, 10.0, 10.0, z, -10.0, 10.0, z]}),
        })
    ds.ROIContourSequence = _seq(*contours)
    ds.RTROIObservationsSequence = _seq(*[
        {"ObservationNumber": n + 1, "ReferencedROINumber": n + 1, "RTROIInterpretedType": "GTV",
         "ROIInterpreter": "Wu^Jiahao"} for n, _ in enumerate(roi_names)])
    ds.ApprovalStatus = "APPROVED"
    ds.ReviewerName = "Wu^Jiahao"
    ds.ReviewDate = "20170421"
    ds.ReviewTime = "080000"
    block = ds.private_block(0x3007, "LEKSELL GAMMAPLAN", create=True)
    block.add_new(0x10, "LO", f"{first.PatientID} {first.PatientName}")
    return ds


def rtss_resolution_problems(rtss: Dataset, images: Sequence[Dataset]) -> List[str]:
    """What in the structure set does not resolve to ``images`` (empty when everything does)."""
    problems = []
    sops = {str(im.SOPInstanceUID) for im in images}
    series = {str(im.SeriesInstanceUID) for im in images}
    studies = {str(im.StudyInstanceUID) for im in images}
    frames = {str(im.FrameOfReferenceUID) for im in images if "FrameOfReferenceUID" in im}
    if str(rtss.StudyInstanceUID) not in studies:
        problems.append("StudyInstanceUID of the structure set is not the images' study")
    if {str(rtss.PatientID)} != {str(im.PatientID) for im in images}:
        problems.append("PatientID differs between the structure set and its images")
    for ref in rtss.ReferencedFrameOfReferenceSequence:
        if str(ref.FrameOfReferenceUID) not in frames:
            problems.append("ReferencedFrameOfReferenceSequence FrameOfReferenceUID unresolved")
        for study in ref.get("RTReferencedStudySequence", []):
            if str(study.ReferencedSOPInstanceUID) not in studies:
                problems.append("RTReferencedStudySequence ReferencedSOPInstanceUID unresolved")
            for ser in study.get("RTReferencedSeriesSequence", []):
                if str(ser.SeriesInstanceUID) not in series:
                    problems.append("RTReferencedSeriesSequence SeriesInstanceUID unresolved")
                for item in ser.get("ContourImageSequence", []):
                    if str(item.ReferencedSOPInstanceUID) not in sops:
                        problems.append("ContourImageSequence item unresolved")
    for roi in rtss.StructureSetROISequence:
        if str(roi.ReferencedFrameOfReferenceUID) not in frames:
            problems.append("StructureSetROISequence ReferencedFrameOfReferenceUID unresolved")
    for contour in rtss.ROIContourSequence:
        for c in contour.get("ContourSequence", []):
            for item in c.get("ContourImageSequence", []):
                if str(item.ReferencedSOPInstanceUID) not in sops:
                    problems.append("ROIContourSequence ContourImageSequence item unresolved")
    return problems


def read_tree(root: Any) -> Dict[str, Dataset]:
    """Every DICOM file below ``root`` read with pydicom: {relative path: dataset}."""
    out = {}
    for dirpath, _, names in os.walk(str(root)):
        for name in names:
            path = os.path.join(dirpath, name)
            if name.endswith(".dcm"):
                out[os.path.relpath(path, str(root))] = pydicom.dcmread(path)
    return out


def file_bytes(ds: Dataset, syntax: Optional[str] = None) -> bytes:
    buffer = io.BytesIO()
    if syntax is not None:
        ds.file_meta.TransferSyntaxUID = UID(syntax)
    ts = str(ds.file_meta.TransferSyntaxUID)
    if PYDICOM_3:
        ds.save_as(buffer, implicit_vr=ts == IMPLICIT, little_endian=ts != BIG, enforce_file_format=True)
    else:
        ds.is_implicit_VR = ts == IMPLICIT
        ds.is_little_endian = ts != BIG
        ds.save_as(buffer, write_like_original=False)
    return buffer.getvalue()
